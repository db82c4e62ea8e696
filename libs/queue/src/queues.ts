/** Queue names and job payloads shared by the api (producer) and the worker (consumer). */
export const BUILDS_QUEUE = 'builds';
/** Scheduled maintenance: garbage collection of blobs and cache entries. */
export const GC_QUEUE = 'gc';

export interface BuildJob {
  buildId: string;
  tenantId: string;
}
