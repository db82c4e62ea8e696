/** Error codes of the OCI Distribution spec, with the HTTP status each is answered with. */
export const ErrorStatus = {
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_INVALID: 400,
  BLOB_UPLOAD_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 400,
  MANIFEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
  TAG_INVALID: 400,
  RANGE_INVALID: 416,
  /** Distribution's code for a back end (here S3) failing: the client retries later. */
  UNAVAILABLE: 503,
} as const;

export type ErrorCode = keyof typeof ErrorStatus;

/** A failure a registry client is told about in the spec's `{ errors: [...] }` body. */
export class RegistryError extends Error {
  override readonly name = 'RegistryError';
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly detail?: unknown,
    status?: number,
  ) {
    super(message);
    this.status = status ?? ErrorStatus[code];
  }

  toBody(): { errors: Array<{ code: string; message: string; detail?: unknown }> } {
    // RANGE_INVALID is Strata's name for an unsatisfiable range; the spec has no code, BLOB_UPLOAD_INVALID is closest.
    const code = this.code === 'RANGE_INVALID' ? 'BLOB_UPLOAD_INVALID' : this.code;
    return { errors: [{ code, message: this.message, ...(this.detail === undefined ? {} : { detail: this.detail }) }] };
  }
}
