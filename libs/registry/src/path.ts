import { isDigest, repositoryNameProblem, tagNameProblem, type Digest } from '@strata/oci';
import { RegistryError } from './errors.js';

/** What a request under /v2 addresses, parsed from a path whose names may contain slashes. */
export type RegistryRoute =
  | { kind: 'base' }
  | { kind: 'token' }
  | { kind: 'catalog' }
  | { kind: 'manifest'; name: string; reference: string }
  | { kind: 'blob'; name: string; digest: Digest }
  | { kind: 'uploads'; name: string }
  | { kind: 'upload'; name: string; uuid: string }
  | { kind: 'tags'; name: string }
  | { kind: 'referrers'; name: string; digest: Digest };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Parses the part of the URL path after `/v2` (e.g. `/acme/app/manifests/v1`). Null when no route matches. */
export function parseRegistryPath(rest: string): RegistryRoute | null {
  if (rest === '' || rest === '/') return { kind: 'base' };
  if (rest === '/token') return { kind: 'token' };
  if (rest === '/_catalog') return { kind: 'catalog' };
  let m = /^\/(.+)\/manifests\/([^/]+)$/.exec(rest);
  if (m) {
    const name = checkName(m[1]!);
    const reference = decodeURIComponent(m[2]!);
    if (reference.includes(':')) checkDigest(reference, 'DIGEST_INVALID');
    else if (tagNameProblem(reference)) throw new RegistryError('TAG_INVALID', tagNameProblem(reference)!, { tag: reference });
    return { kind: 'manifest', name, reference };
  }
  m = /^\/(.+)\/blobs\/uploads\/?$/.exec(rest);
  if (m) return { kind: 'uploads', name: checkName(m[1]!) };
  m = /^\/(.+)\/blobs\/uploads\/([^/]+)$/.exec(rest);
  if (m) {
    const name = checkName(m[1]!);
    if (!UUID.test(m[2]!)) throw new RegistryError('BLOB_UPLOAD_UNKNOWN', `there is no upload "${m[2]}"`);
    return { kind: 'upload', name, uuid: m[2]! };
  }
  m = /^\/(.+)\/blobs\/([^/]+)$/.exec(rest);
  if (m) return { kind: 'blob', name: checkName(m[1]!), digest: checkDigest(decodeURIComponent(m[2]!), 'DIGEST_INVALID') };
  m = /^\/(.+)\/tags\/list$/.exec(rest);
  if (m) return { kind: 'tags', name: checkName(m[1]!) };
  m = /^\/(.+)\/referrers\/([^/]+)$/.exec(rest);
  if (m) return { kind: 'referrers', name: checkName(m[1]!), digest: checkDigest(decodeURIComponent(m[2]!), 'DIGEST_INVALID') };
  return null;
}

function checkName(name: string): string {
  const problem = repositoryNameProblem(name);
  if (problem) throw new RegistryError('NAME_INVALID', problem, { name });
  return name;
}

/** Only sha256 is stored; other algorithms are refused rather than silently not found. */
export function checkDigest(value: string, code: 'DIGEST_INVALID' | 'MANIFEST_UNKNOWN' = 'DIGEST_INVALID'): Digest {
  if (!isDigest(value)) throw new RegistryError(code, `"${value}" is not a sha256 digest`, { digest: value });
  return value;
}

/** `<tenant>/<repository>` → its parts; a name without a repository part names no repository. */
export function splitName(name: string): { tenantName: string; repository: string } | null {
  const slash = name.indexOf('/');
  if (slash <= 0 || slash === name.length - 1) return null;
  return { tenantName: name.slice(0, slash), repository: name.slice(slash + 1) };
}
