{
  "targets": [
    {
      "target_name": "strata_native",
      "sources": ["src/native.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O2"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"]
    },
    {
      "target_name": "strata-mknod-agent",
      "type": "executable",
      "sources": ["src/mknod-agent.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O2"],
      "defines": ["_GNU_SOURCE"]
    }
  ]
}
