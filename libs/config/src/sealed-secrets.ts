import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

/**
 * Build secrets at rest: AES-256-GCM under the deployment's secrets key, bound to the build id
 * (as additional authenticated data) so a sealed blob cannot be replayed onto another build.
 * Layout: version byte (1) | 12-byte nonce | ciphertext | 16-byte tag. The plaintext is JSON
 * `{ "<id>": "<base64 value>" }`.
 */
const VERSION = 1;

export class SealedSecretsError extends Error {
  override readonly name = 'SealedSecretsError';
}

export function sealSecrets(key: Buffer, buildId: string, secrets: ReadonlyMap<string, Buffer>): Buffer {
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(Buffer.from(buildId, 'utf8'));
  const plain = Buffer.from(JSON.stringify(Object.fromEntries([...secrets].map(([id, v]) => [id, v.toString('base64')]))), 'utf8');
  const body = Buffer.concat([cipher.update(plain), cipher.final()]);
  plain.fill(0);
  return Buffer.concat([Buffer.from([VERSION]), nonce, body, cipher.getAuthTag()]);
}

export function openSecrets(key: Buffer, buildId: string, sealed: Uint8Array): Map<string, Buffer> {
  const buf = Buffer.from(sealed);
  if (buf.length < 1 + 12 + 16 || buf[0] !== VERSION) throw new SealedSecretsError('the build secrets are not in a known sealed format');
  const decipher = createDecipheriv('aes-256-gcm', key, buf.subarray(1, 13));
  decipher.setAAD(Buffer.from(buildId, 'utf8'));
  decipher.setAuthTag(buf.subarray(buf.length - 16));
  let plain: Buffer;
  try {
    plain = Buffer.concat([decipher.update(buf.subarray(13, buf.length - 16)), decipher.final()]);
  } catch {
    throw new SealedSecretsError('the build secrets cannot be decrypted (was STRATA_SECRETS_KEY changed?)');
  }
  const parsed = JSON.parse(plain.toString('utf8')) as Record<string, string>;
  plain.fill(0);
  return new Map(Object.entries(parsed).map(([id, v]) => [id, Buffer.from(v, 'base64')]));
}

/** What a trigger's sealed webhook secret and credentials are bound to (the additional authenticated data), so they open only as that trigger's. */
export function triggerSealScope(triggerId: string): string {
  return `trigger:${triggerId}`;
}

/** Sealed entries whose id starts with this are SSH keys for RUN --mount=type=ssh (`ssh:<id>:<n>`), not secrets (whose ids have no ":"). */
export const SSH_KEY_PREFIX = 'ssh:';
