// Preloaded (`--import`) into a benchmark's api when BENCH_API_CPU_PROF is set: SIGTERM ends the
// process with process.exit(), so that `--cpu-prof` writes its profile (Nest's shutdown hook would
// re-raise the signal, and a process killed by a signal writes none).
process.once('SIGTERM', () => process.exit(0));
