import type { RunRequest } from '../../libs/build-engine/src/index.js';

/** A `RUN /bin/sh -c script` as root in `/` over `layers`, its output dropped: the run benchmarks' step through BuildRuntime.run. */
export function shellStep(layers: RunRequest['layers'], script: string): RunRequest {
  return {
    layers,
    args: ['/bin/sh', '-c', script],
    env: [],
    user: '',
    cwd: '/',
    network: 'default',
    line: 1,
    onOutput: () => undefined,
    signal: new AbortController().signal,
  };
}
