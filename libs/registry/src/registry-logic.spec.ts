import { createHash } from 'node:crypto';
import { RegistryError } from './errors.js';
import { parseManifest } from './manifest-document.js';
import { parseRegistryPath, splitName } from './path.js';
import { parseScopes, signRegistryToken, tokenAllows, verifyRegistryToken } from './token.js';

const sha = (s: string | Buffer) => `sha256:${createHash('sha256').update(s).digest('hex')}`;
const code = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    return (err as RegistryError).code;
  }
  return null;
};

describe('parseRegistryPath', () => {
  it('splits nested names from the manifest, blob, upload, tag and referrer routes', () => {
    const d = sha('x');
    expect(parseRegistryPath('/')).toEqual({ kind: 'base' });
    expect(parseRegistryPath('/_catalog')).toEqual({ kind: 'catalog' });
    expect(parseRegistryPath('/acme/team/app/manifests/v1.2')).toEqual({ kind: 'manifest', name: 'acme/team/app', reference: 'v1.2' });
    expect(parseRegistryPath(`/acme/app/manifests/${d}`)).toEqual({ kind: 'manifest', name: 'acme/app', reference: d });
    expect(parseRegistryPath(`/acme/app/blobs/${d}`)).toEqual({ kind: 'blob', name: 'acme/app', digest: d });
    expect(parseRegistryPath('/acme/app/blobs/uploads/')).toEqual({ kind: 'uploads', name: 'acme/app' });
    expect(parseRegistryPath('/acme/blobs/uploads/0f8fad5b-d9cb-469f-a165-70867728950e')).toEqual({ kind: 'upload', name: 'acme', uuid: '0f8fad5b-d9cb-469f-a165-70867728950e' });
    expect(parseRegistryPath('/acme/app/tags/list')).toEqual({ kind: 'tags', name: 'acme/app' });
    expect(parseRegistryPath(`/acme/app/referrers/${d}`)).toEqual({ kind: 'referrers', name: 'acme/app', digest: d });
    expect(parseRegistryPath('/acme/app/nothing')).toBeNull();
  });

  it('answers malformed names, tags and digests with the spec codes', () => {
    expect(code(() => parseRegistryPath('/Acme/App/tags/list'))).toBe('NAME_INVALID');
    expect(code(() => parseRegistryPath('/acme/app/manifests/-bad'))).toBe('TAG_INVALID');
    expect(code(() => parseRegistryPath('/acme/app/manifests/sha256:abc'))).toBe('DIGEST_INVALID');
    expect(code(() => parseRegistryPath('/acme/app/blobs/uploads/not-a-uuid'))).toBe('BLOB_UPLOAD_UNKNOWN');
  });

  it('takes the tenant from the first path component', () => {
    expect(splitName('acme/team/app')).toEqual({ tenantName: 'acme', repository: 'team/app' });
    expect(splitName('acme')).toBeNull();
  });
});

describe('registry tokens', () => {
  const secret = 'k'.repeat(40);
  const access = [{ type: 'repository' as const, name: 'acme/app', actions: ['pull' as const] }];

  it('verifies its own signature and expiry, and grants only what it lists', () => {
    const now = Date.UTC(2026, 0, 1);
    const { token } = signRegistryToken(secret, { sub: 't1', tenantId: 'a', tenantName: 'acme', access }, now);
    const claims = verifyRegistryToken(secret, token, now + 1000)!;
    expect(claims.access).toEqual(access);
    expect(tokenAllows(claims, 'acme/app', 'pull')).toBe(true);
    expect(tokenAllows(claims, 'acme/app', 'push')).toBe(false);
    expect(tokenAllows(claims, 'acme/other', 'pull')).toBe(false);
    expect(verifyRegistryToken(secret, token, now + 301_000)).toBeNull();
    expect(verifyRegistryToken('z'.repeat(40), token, now)).toBeNull();
    const [h, , s] = token.split('.');
    const forged = Buffer.from(JSON.stringify({ ...claims, access: [{ type: 'repository', name: 'other/app', actions: ['push'] }] })).toString('base64url');
    expect(verifyRegistryToken(secret, `${h}.${forged}.${s}`, now)).toBeNull();
  });

  it('parses scope parameters, ignoring other resource types and actions', () => {
    expect(parseScopes(['repository:acme/app:pull,push', 'registry:catalog:*', 'repository:acme/x:delete', 'repository:localhost:5000/a:pull'])).toEqual([
      { type: 'repository', name: 'acme/app', actions: ['pull', 'push'] },
      { type: 'repository', name: 'localhost:5000/a', actions: ['pull'] },
    ]);
  });
});

describe('parseManifest', () => {
  const config = { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha('c'), size: 1 };
  const layer = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha('l'), size: 2 };
  const oci = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers: [layer] }));

  it('lists the blobs an image manifest references and checks the claimed digest', () => {
    const parsed = parseManifest(oci, 'application/vnd.oci.image.manifest.v1+json', 'v1');
    expect(parsed.digest).toBe(sha(oci));
    expect(parsed.blobs.map((b) => b.digest)).toEqual([config.digest, layer.digest]);
    expect(parsed.configDigest).toBe(config.digest);
    expect(parseManifest(oci, undefined, sha(oci)).mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(code(() => parseManifest(oci, undefined, sha('other')))).toBe('DIGEST_INVALID');
  });

  it('lists the children of an index and records subject and artifactType', () => {
    const index = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.list.v2+json', manifests: [{ ...config, mediaType: 'application/vnd.docker.distribution.manifest.v2+json' }] }),
    );
    expect(parseManifest(index, 'application/vnd.docker.distribution.manifest.list.v2+json', 'l').manifests).toHaveLength(1);
    const artifact = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', artifactType: 'a/b', config, layers: [], subject: layer }));
    expect(parseManifest(artifact, undefined, 'x')).toMatchObject({ artifactType: 'a/b', subject: layer });
  });

  it('refuses bad documents: wrong types, mismatched Content-Type, bad descriptors, oversize', () => {
    expect(code(() => parseManifest(Buffer.from('{'), undefined, 'x'))).toBe('MANIFEST_INVALID');
    expect(code(() => parseManifest(oci, 'application/vnd.docker.distribution.manifest.v2+json', 'x'))).toBe('MANIFEST_INVALID');
    expect(code(() => parseManifest(Buffer.from(JSON.stringify({ schemaVersion: 2, config: { ...config, digest: 'md5:x' }, layers: [] })), undefined, 'x'))).toBe('MANIFEST_INVALID');
    expect(code(() => parseManifest(Buffer.from(JSON.stringify({ schemaVersion: 1 })), undefined, 'x'))).toBe('MANIFEST_INVALID');
    const big = Buffer.alloc(4 * 1024 * 1024 + 1, 0x20);
    const err = (() => {
      try {
        parseManifest(big, undefined, 'x');
      } catch (e) {
        return e as RegistryError;
      }
      return null;
    })();
    expect(err).toMatchObject({ code: 'SIZE_INVALID', status: 413 });
    expect(new RegistryError('MANIFEST_UNKNOWN', 'gone', { tag: 'x' }).toBody()).toEqual({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'gone', detail: { tag: 'x' } }] });
  });
});
