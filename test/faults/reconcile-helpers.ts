// What the fault suites that wait on the reconciler share.

/** Fast reconciliation for tests: a pass every half second, a worker gone after 3 s without a heartbeat. */
export const FAST_RECONCILE = { STRATA_RECONCILE_INTERVAL_MS: '500', STRATA_WORKER_STALE_MS: '3000' };

/** Polls `check` every 200 ms until it holds; throws `timed out waiting until <what>` after timeoutMs. */
export async function until(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
