import { BadRequestException } from '@nestjs/common';
import { SSH_KEY_PREFIX } from '@strata/config';

/** `Strata-Build-Secret: id=<id>,src=<base64 value>`, once per secret. */
export const SECRET_HEADER = 'strata-build-secret';
/** `Strata-Build-SSH: id=<id>,src=<base64 private key>`, once per key: what `strata build --ssh` sends. */
export const SSH_HEADER = 'strata-build-ssh';
export const MAX_SECRET_BYTES = 512 * 1024;
export const MAX_SECRETS = 64;
const ID = /^[A-Za-z0-9._-]{1,128}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]*={0,2}|[A-Za-z0-9_-]*={0,2})$/;

/**
 * Parses `id=<id>,src=<base64>` headers (`header` names them in errors), never echoing a value back.
 * Each header line holds one entry, or several when a client joined repeated headers with ", "
 * (fetch does): an `id=` field after a complete entry starts the next one.
 */
function parseIdSrcHeaders(lines: readonly string[] | undefined, header: string, what: string): Array<{ id: string; value: Buffer }> {
  const entries: Array<{ id: string | null; src: string | null }> = [];
  for (const line of lines ?? []) {
    let current: { id: string | null; src: string | null } | null = null;
    for (const part of line.split(',')) {
      const eq = part.indexOf('=');
      const key = (eq < 0 ? part : part.slice(0, eq)).trim().toLowerCase();
      const value = eq < 0 ? '' : part.slice(eq + 1).trim();
      if (key !== 'id' && key !== 'src') {
        throw new BadRequestException(`${header}: unknown field "${key.slice(0, 32)}"; the format is "id=<id>,src=<base64 value>".`);
      }
      if (!current || current[key] !== null) entries.push((current = { id: null, src: null }));
      current[key] = value;
    }
  }
  const out: Array<{ id: string; value: Buffer }> = [];
  for (const { id, src } of entries) {
    if (id === null || src === null) throw new BadRequestException(`${header} needs both fields for each ${what}: "id=<id>,src=<base64 value>".`);
    if (!ID.test(id)) throw new BadRequestException(`${header}: invalid id "${id.slice(0, 128)}"; use 1 to 128 letters, digits, ".", "_" or "-".`);
    if (!BASE64.test(src) || src.replace(/=+$/, '').length % 4 === 1) throw new BadRequestException(`${header}: the value of "${id}" is not valid base64.`);
    const value = Buffer.from(src.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
    if (value.length === 0) throw new BadRequestException(`${header}: the ${what} "${id}" is empty.`);
    if (value.length > MAX_SECRET_BYTES) throw new BadRequestException(`${header}: the ${what} "${id}" is ${value.length} bytes, over the limit of ${MAX_SECRET_BYTES} bytes.`);
    out.push({ id, value });
  }
  if (out.length > MAX_SECRETS) throw new BadRequestException(`At most ${MAX_SECRETS} ${what}s can be sent with a build, got ${out.length}.`);
  return out;
}

/** The Strata-Build-Secret headers of a build request: id → value. */
export function parseSecretHeaders(lines: readonly string[] | undefined): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const { id, value } of parseIdSrcHeaders(lines, 'Strata-Build-Secret', 'secret')) {
    if (out.has(id)) throw new BadRequestException(`Strata-Build-Secret: the secret "${id}" is given more than once.`);
    out.set(id, value);
  }
  return out;
}

/**
 * The Strata-Build-SSH headers of a build request as entries to seal with the secrets: one per key,
 * `ssh:<id>:<n>` (a secret id has no ":"), several keys per id as `strata build --ssh id=a,b` sends.
 */
export function parseSshHeaders(lines: readonly string[] | undefined): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const perId = new Map<string, number>();
  for (const { id, value } of parseIdSrcHeaders(lines, 'Strata-Build-SSH', 'SSH key')) {
    if (!value.includes('PRIVATE KEY-----')) throw new BadRequestException(`Strata-Build-SSH: the key "${id}" is not a PEM or OpenSSH private key.`);
    const n = perId.get(id) ?? 0;
    perId.set(id, n + 1);
    out.set(`${SSH_KEY_PREFIX}${id}:${n}`, value);
  }
  return out;
}
