import { BadRequestException } from '@nestjs/common';

/** `Strata-Build-Secret: id=<id>,src=<base64 value>`, once per secret. */
export const SECRET_HEADER = 'strata-build-secret';
/** `Strata-Build-SSH: id=<id>,src=<base64 private key>`, once per key: what `strata build --ssh` sends. */
export const SSH_HEADER = 'strata-build-ssh';
export const MAX_SECRET_BYTES = 512 * 1024;
export const MAX_SECRETS = 64;
const ID = /^[A-Za-z0-9._-]{1,128}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]*={0,2}|[A-Za-z0-9_-]*={0,2})$/;

/**
 * Parses the secret headers of a build request, never echoing a value back in an error. Each header
 * line holds one secret, or several when a client joined repeated headers with ", " (fetch does):
 * an `id=` field after a complete secret starts the next one. Returns id → value.
 */
export function parseSecretHeaders(lines: readonly string[] | undefined): Map<string, Buffer> {
  const entries: Array<{ id: string | null; src: string | null }> = [];
  for (const line of lines ?? []) {
    let current: { id: string | null; src: string | null } | null = null;
    for (const part of line.split(',')) {
      const eq = part.indexOf('=');
      const key = (eq < 0 ? part : part.slice(0, eq)).trim().toLowerCase();
      const value = eq < 0 ? '' : part.slice(eq + 1).trim();
      if (key !== 'id' && key !== 'src') {
        throw new BadRequestException(`Strata-Build-Secret: unknown field "${key.slice(0, 32)}"; the format is "id=<id>,src=<base64 value>".`);
      }
      if (!current || current[key] !== null) entries.push((current = { id: null, src: null }));
      current[key] = value;
    }
  }
  const out = new Map<string, Buffer>();
  for (const { id, src } of entries) {
    if (id === null || src === null) throw new BadRequestException('Strata-Build-Secret needs both fields for each secret: "id=<id>,src=<base64 value>".');
    if (!ID.test(id)) throw new BadRequestException(`Strata-Build-Secret: invalid id "${id.slice(0, 128)}"; use 1 to 128 letters, digits, ".", "_" or "-".`);
    if (out.has(id)) throw new BadRequestException(`Strata-Build-Secret: the secret "${id}" is given more than once.`);
    if (!BASE64.test(src) || src.replace(/=+$/, '').length % 4 === 1) throw new BadRequestException(`Strata-Build-Secret: the value of "${id}" is not valid base64.`);
    const value = Buffer.from(src.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
    if (value.length === 0) throw new BadRequestException(`Strata-Build-Secret: the secret "${id}" is empty.`);
    if (value.length > MAX_SECRET_BYTES) throw new BadRequestException(`Strata-Build-Secret: the secret "${id}" is ${value.length} bytes, over the limit of ${MAX_SECRET_BYTES} bytes.`);
    out.set(id, value);
  }
  if (out.size > MAX_SECRETS) throw new BadRequestException(`At most ${MAX_SECRETS} secrets can be sent with a build, got ${out.size}.`);
  return out;
}
