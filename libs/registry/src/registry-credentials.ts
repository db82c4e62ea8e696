import type { RegistryCredentials } from './registry-client.js';

/**
 * Registry credentials sent with a build (`Strata-Registry-Auth: base64(JSON {"host": {"username",
 * "password"}})`). The api keeps them only sealed (AES-256-GCM under STRATA_SECRETS_KEY, bound to
 * the build id: `sealSecrets` of @strata/config, as one entry), and the worker erases them when the
 * build ends.
 */
export type RegistryAuth = Record<string, RegistryCredentials>;

export class RegistryCredentialsError extends Error {
  override readonly name = 'RegistryCredentialsError';
}

const MAX_HEADER = 16 * 1024;

/** Parses and validates the header value; the message never repeats a password. */
export function parseRegistryAuthHeader(value: string): RegistryAuth {
  if (value.length > MAX_HEADER) throw new RegistryCredentialsError(`Strata-Registry-Auth is longer than ${MAX_HEADER} characters`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(value.trim(), 'base64').toString('utf8'));
  } catch {
    throw new RegistryCredentialsError('Strata-Registry-Auth must be base64 of a JSON object like {"registry.example.com": {"username": "...", "password": "..."}}');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new RegistryCredentialsError('Strata-Registry-Auth must be base64 of a JSON object keyed by registry host');
  }
  const out: RegistryAuth = {};
  for (const [host, c] of Object.entries(parsed as Record<string, unknown>)) {
    if (!/^[A-Za-z0-9.-]+(:\d+)?$/.test(host)) throw new RegistryCredentialsError(`Strata-Registry-Auth: "${host}" is not a registry host (host or host:port)`);
    const cred = c as { username?: unknown; password?: unknown } | null;
    if (!cred || typeof cred.username !== 'string' || typeof cred.password !== 'string') {
      throw new RegistryCredentialsError(`Strata-Registry-Auth: the entry for "${host}" needs a string username and password`);
    }
    out[host.toLowerCase()] = { username: cred.username, password: cred.password };
  }
  return out;
}

export const REGISTRY_AUTH_HEADER = 'strata-registry-auth';
const ENTRY = 'registry-auth';

/** As the single entry of a secrets map, for `sealSecrets`. */
export function registryAuthToEntries(auth: RegistryAuth): Map<string, Buffer> {
  return new Map([[ENTRY, Buffer.from(JSON.stringify(auth), 'utf8')]]);
}

/** Back from what `openSecrets` returns. */
export function registryAuthFromEntries(entries: ReadonlyMap<string, Buffer>): RegistryAuth {
  const raw = entries.get(ENTRY);
  if (!raw) throw new RegistryCredentialsError('the sealed registry credentials hold no credentials');
  return JSON.parse(raw.toString('utf8')) as RegistryAuth;
}
