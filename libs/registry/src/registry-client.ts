import { Readable, Transform, type TransformCallback } from 'node:stream';
import {
  type Descriptor,
  type Digest,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  isDigest,
  isImageIndexMediaType,
  isImageManifestMediaType,
  MediaType,
  type Platform,
  sha256Digest,
} from '@strata/oci';

/**
 * A client of the OCI Distribution API for pulling base images (FROM): manifests by tag or digest,
 * the Bearer token flow (401 + `WWW-Authenticate: Bearer realm=,service=,scope=` → GET realm,
 * anonymous or with basic credentials), plain basic auth, OCI and Docker schema 2 manifests and
 * indexes (the build's platform is picked from an index), every document checked against its
 * digest, and blobs streamed into the blob store with their digest verified while they stream.
 * Pure logic over `fetch`: no framework.
 */

export interface RegistryCredentials {
  username: string;
  password: string;
}

/** What the client needs of the blob store (BlobStore fits). */
export interface PullBlobStore {
  put(body: Buffer | Readable, expectedDigest?: Digest): Promise<{ digest: Digest; size: number }>;
  exists(digest: Digest): Promise<boolean>;
  get(digest: Digest): Promise<Readable>;
}

export interface RegistryClientOptions {
  /** Hosts (with or without port) spoken to over plain HTTP; every other host is HTTPS. */
  insecureRegistries: string[];
  /** Credentials per registry host, e.g. from the build request. */
  credentials?: (host: string) => RegistryCredentials | undefined;
  /** The platform picked from an index; linux/amd64 by default. */
  platform?: Platform;
  fetch?: typeof fetch;
  userAgent?: string;
  /** Largest manifest or config document accepted. */
  maxDocumentBytes?: number;
  /** How long to wait for a response to start (connect, TLS, headers); a hung registry fails the pull then. Default 30 s. */
  responseTimeoutMs?: number;
}

export class RegistryPullError extends Error {
  override readonly name = 'RegistryPullError';
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

export interface PulledImage {
  /** Digest of the platform's image manifest (what the layers hang off). */
  manifestDigest: Digest;
  /** Digest of the index the tag pointed at, when it pointed at one. */
  indexDigest: Digest | null;
  manifest: ImageManifest;
  config: ImageConfig;
}

export interface PullStats {
  /** Blobs fetched over HTTP. */
  fetched: number;
  /** Blobs already in the blob store. */
  skipped: number;
  bytes: number;
}

const MANIFEST_ACCEPT = [MediaType.ociIndex, MediaType.dockerManifestList, MediaType.ociManifest, MediaType.dockerManifest].join(', ');

/** `Bearer realm="...",service="...",scope="..."` → { scheme, params }. */
export function parseAuthenticate(header: string): { scheme: string; params: Record<string, string> } {
  const m = /^\s*(\S+)\s*(.*)$/.exec(header);
  if (!m) return { scheme: '', params: {} };
  const params: Record<string, string> = {};
  const re = /([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?/g;
  let p: RegExpExecArray | null;
  while ((p = re.exec(m[2])) !== null) params[p[1].toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3];
  return { scheme: m[1].toLowerCase(), params };
}

/** Picks the manifest for a platform from an index, as containerd's default matcher does for linux/amd64. */
export function pickPlatform(index: ImageIndex, platform: Platform): Descriptor | null {
  const candidates = index.manifests.filter(
    (d) => isImageManifestMediaType(d.mediaType) && d.platform?.os === platform.os && d.platform?.architecture === platform.architecture,
  );
  if (platform.variant) {
    const exact = candidates.find((d) => d.platform?.variant === platform.variant);
    if (exact) return exact;
  }
  return candidates.find((d) => !d.platform?.variant) ?? candidates[0] ?? null;
}

/** Fails the stream once more bytes than announced arrive (a descriptor's size is part of the contract). */
class SizeLimit extends Transform {
  private seen = 0;
  constructor(
    private readonly what: string,
    private readonly limit: number,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.limit) cb(new RegistryPullError(`${this.what} is larger than its descriptor's ${this.limit} bytes`));
    else cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    cb(this.seen === this.limit ? null : new RegistryPullError(`${this.what}: got ${this.seen} bytes, its descriptor says ${this.limit}`));
  }
}

async function readLimited(stream: Readable, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    size += (chunk as Buffer).length;
    if (size > limit) {
      stream.destroy();
      throw new RegistryPullError(`${what} is larger than ${limit} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

export class RegistryClient {
  private readonly fetch: typeof fetch;
  private readonly platform: Platform;
  private readonly maxDocument: number;
  /** Bearer tokens per `host scope`, reused until they expire. */
  private readonly tokens = new Map<string, { token: string; expires: number }>();

  constructor(private readonly opts: RegistryClientOptions) {
    this.fetch = opts.fetch ?? globalThis.fetch;
    this.platform = opts.platform ?? { os: 'linux', architecture: 'amd64' };
    this.maxDocument = opts.maxDocumentBytes ?? 4 * 1024 * 1024;
  }

  baseUrl(host: string): string {
    const h = host.toLowerCase();
    const bare = h.replace(/:\d+$/, '');
    const insecure = this.opts.insecureRegistries.some((i) => i === h || i === bare);
    return `${insecure ? 'http' : 'https'}://${host}`;
  }

  /**
   * Resolves `repository` at a tag or digest to the platform's image manifest and its config.
   * Manifests and config are stored in the blob store (digest-verified). A digest reference whose
   * manifest is already stored is resolved without any request: a digest names immutable content.
   * A tag is always asked for again, as BuildKit does, so a moved tag is seen at once.
   */
  async resolve(host: string, repository: string, reference: string, blobs: PullBlobStore, signal?: AbortSignal): Promise<PulledImage> {
    const first = await this.manifest(host, repository, reference, blobs, signal);
    let indexDigest: Digest | null = null;
    let manifestDigest = first.digest;
    let doc = first.doc;
    if (isImageIndexMediaType(first.mediaType)) {
      indexDigest = first.digest;
      const chosen = pickPlatform(doc as ImageIndex, this.platform);
      if (!chosen) {
        const have = (doc as ImageIndex).manifests.map((d) => (d.platform ? `${d.platform.os}/${d.platform.architecture}${d.platform.variant ? `/${d.platform.variant}` : ''}` : '?'));
        throw new RegistryPullError(`${host}/${repository}:${reference} has no ${this.platform.os}/${this.platform.architecture} image (it has ${have.join(', ') || 'none'})`);
      }
      const child = await this.manifest(host, repository, chosen.digest, blobs, signal);
      if (!isImageManifestMediaType(child.mediaType)) throw new RegistryPullError(`${host}/${repository}@${chosen.digest} is a ${child.mediaType}, not an image manifest`);
      manifestDigest = child.digest;
      doc = child.doc;
    } else if (!isImageManifestMediaType(first.mediaType)) {
      throw new RegistryPullError(`${host}/${repository}:${reference} is a "${first.mediaType}", not an image (schema 1 manifests are not supported)`);
    }
    const manifest = doc as ImageManifest;
    if (!manifest.config || !isDigest(manifest.config.digest) || !Array.isArray(manifest.layers)) {
      throw new RegistryPullError(`the manifest ${manifestDigest} has no valid config or layers`);
    }
    await this.pullBlob(host, repository, manifest.config, blobs, signal);
    const configBytes = await readLimited(await blobs.get(manifest.config.digest), this.maxDocument, 'the image config');
    const config = JSON.parse(configBytes.toString('utf8')) as ImageConfig;
    if (!config.rootfs || !Array.isArray(config.rootfs.diff_ids) || config.rootfs.diff_ids.length !== manifest.layers.length) {
      throw new RegistryPullError(`the image config ${manifest.config.digest} does not list one diff ID per layer`);
    }
    return { manifestDigest, indexDigest, manifest, config };
  }

  /** Fetches the blobs that are not stored yet; each is verified against its digest while it streams in. */
  async pullBlobs(host: string, repository: string, descriptors: Descriptor[], blobs: PullBlobStore, signal?: AbortSignal): Promise<PullStats> {
    const stats: PullStats = { fetched: 0, skipped: 0, bytes: 0 };
    for (const d of descriptors) {
      const got = await this.pullBlob(host, repository, d, blobs, signal);
      if (got === null) stats.skipped++;
      else {
        stats.fetched++;
        stats.bytes += got;
      }
    }
    return stats;
  }

  /** Stores one blob unless it is stored already; returns the bytes fetched, or null when none were. */
  async pullBlob(host: string, repository: string, d: Descriptor, blobs: PullBlobStore, signal?: AbortSignal): Promise<number | null> {
    if (!isDigest(d.digest)) throw new RegistryPullError(`invalid blob digest "${d.digest}"`);
    if (d.urls && d.urls.length > 0 && d.mediaType === MediaType.dockerForeignLayerGzip) {
      throw new RegistryPullError(`the layer ${d.digest} is a foreign layer (${d.urls[0]}); foreign layers are not pulled`);
    }
    if (await blobs.exists(d.digest)) return null;
    const source = Readable.from(this.blobBody(host, repository, d, signal), { objectMode: false });
    const limited = new SizeLimit(`blob ${d.digest}`, d.size);
    source.once('error', (e) => limited.destroy(e));
    const stored = await blobs.put(source.pipe(limited), d.digest);
    return stored.size;
  }

  /**
   * A blob's bytes, each yielded once: a body that stalls (nothing for responseTimeoutMs), breaks
   * or ends short is asked for again from the byte it stopped at (`Range: bytes=<n>-`; a registry
   * that answers 200 instead has its first n bytes skipped), as are 5xx and 429 answers and
   * connections that fail, after a backoff, up to BLOB_ATTEMPTS requests in all. Aborting `signal`
   * (the build is cancelled) stops it at once.
   */
  private async *blobBody(host: string, repository: string, d: Descriptor, signal?: AbortSignal): AsyncGenerator<Buffer> {
    const idleMs = this.opts.responseTimeoutMs ?? 30_000;
    const what = `${host}/${repository}: blob ${d.digest}`;
    let offset = 0;
    for (let attempt = 1; ; attempt++) {
      let failure: string;
      const headers: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
      let res: Response | null = null;
      try {
        res = await this.request(host, repository, `/v2/${repository}/blobs/${d.digest}`, { method: 'GET', headers, signal });
      } catch (e) {
        if (!(e instanceof RegistryPullError) || e.status !== undefined || signal?.aborted) throw e;
        failure = e.message;
      }
      if (res !== null) {
        if (!res.ok) {
          await res.body?.cancel().catch(() => undefined);
          if (res.status < 500 && res.status !== 429) throw new RegistryPullError(`${what} answered HTTP ${res.status}`, res.status);
          failure = `${what} answered HTTP ${res.status}`;
        } else if (!res.body) {
          throw new RegistryPullError(`${what} came without a body`);
        } else {
          // What the answer repeats of the bytes already yielded: all of them for a 200 to a Range request.
          let skip = offset > 0 && res.status !== 206 ? offset : 0;
          if (offset > 0 && res.status === 206) {
            const from = /^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '');
            if (!from || Number(from[1]) > offset) throw new RegistryPullError(`${what}: asked for bytes ${offset}- and got "${res.headers.get('content-range')}"`);
            skip = offset - Number(from[1]);
          }
          const reader = res.body.getReader();
          try {
            for (;;) {
              const chunk = await readWithin(reader, idleMs, signal);
              if (chunk === null) break;
              let bytes = Buffer.from(chunk);
              if (skip > 0) {
                const dropped = Math.min(skip, bytes.length);
                skip -= dropped;
                bytes = bytes.subarray(dropped);
                if (bytes.length === 0) continue;
              }
              offset += bytes.length;
              yield bytes;
            }
            if (offset >= d.size) return;
            failure = `${what}: the body ended after ${offset} of ${d.size} bytes`;
          } catch (e) {
            if (signal?.aborted) throw new RegistryPullError('the pull was cancelled');
            failure =
              e instanceof BodyStalledError
                ? `${host} stopped sending blob ${d.digest} after ${offset} of ${d.size} bytes (nothing for ${idleMs / 1000} s)`
                : `${what}: the connection broke after ${offset} of ${d.size} bytes (${(e as Error).message})`;
          } finally {
            reader.cancel().catch(() => undefined);
          }
        }
      }
      if (attempt >= BLOB_ATTEMPTS) throw new RegistryPullError(`${failure!}; gave up after ${attempt} attempts`);
      await sleep(BLOB_RETRY_BACKOFF_MS * 2 ** (attempt - 1), signal);
      if (signal?.aborted) throw new RegistryPullError('the pull was cancelled');
    }
  }

  /** Gets a manifest or index by tag or digest and checks its digest; stores its bytes in the blob store. */
  private async manifest(
    host: string,
    repository: string,
    reference: string,
    blobs: PullBlobStore,
    signal?: AbortSignal,
  ): Promise<{ digest: Digest; mediaType: string; doc: ImageManifest | ImageIndex }> {
    const byDigest = isDigest(reference);
    let bytes: Buffer | null = null;
    let headerType: string | null = null;
    if (byDigest && (await blobs.exists(reference))) {
      bytes = await readLimited(await blobs.get(reference), this.maxDocument, `the manifest ${reference}`);
    }
    if (bytes === null) {
      const res = await this.request(host, repository, `/v2/${repository}/manifests/${reference}`, { method: 'GET', headers: { accept: MANIFEST_ACCEPT }, signal });
      if (res.status === 404) {
        await res.body?.cancel().catch(() => undefined);
        throw new RegistryPullError(`${host}/${repository}${byDigest ? '@' : ':'}${reference} was not found in the registry`, 404);
      }
      if (!res.ok) {
        const text = await res.text().catch(() => '');
        throw new RegistryPullError(`${host}/${repository}${byDigest ? '@' : ':'}${reference}: the registry answered HTTP ${res.status}${errorSummary(text)}`, res.status);
      }
      bytes = await readLimited(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>), this.maxDocument, 'the manifest');
      headerType = (res.headers.get('content-type') ?? '').split(';')[0].trim() || null;
      const digest = sha256Digest(bytes);
      if (byDigest && digest !== reference) throw new RegistryPullError(`the registry sent a manifest hashing to ${digest} for ${reference}`);
      const claimed = res.headers.get('docker-content-digest');
      if (!byDigest && claimed && claimed.startsWith('sha256:') && claimed !== digest) {
        throw new RegistryPullError(`the manifest of ${host}/${repository}:${reference} hashes to ${digest}, the registry says ${claimed}`);
      }
      await blobs.put(bytes, digest);
    }
    const digest = sha256Digest(bytes);
    let doc: ImageManifest | ImageIndex;
    try {
      doc = JSON.parse(bytes.toString('utf8')) as ImageManifest | ImageIndex;
    } catch {
      throw new RegistryPullError(`the manifest ${digest} is not JSON`);
    }
    if ((doc as { schemaVersion?: number }).schemaVersion !== 2) throw new RegistryPullError(`the manifest ${digest} is not schemaVersion 2 (schema 1 is not supported)`);
    const mediaType = doc.mediaType ?? headerType ?? ('manifests' in doc ? MediaType.ociIndex : MediaType.ociManifest);
    return { digest, mediaType, doc };
  }

  /**
   * A request with authentication: tries with a cached token (or none), and on 401 follows the
   * challenge: Bearer → a token from the realm (with basic credentials when there are some), Basic →
   * the credentials. Retries once.
   */
  private async request(host: string, repository: string, path: string, init: { method: string; headers?: Record<string, string>; signal?: AbortSignal }): Promise<Response> {
    const url = `${this.baseUrl(host)}${path}`;
    const scope = `repository:${repository}:pull`;
    const key = `${host} ${scope}`;
    const cached = this.tokens.get(key);
    const headers: Record<string, string> = { ...init.headers, 'user-agent': this.opts.userAgent ?? 'strata' };
    const creds = this.opts.credentials?.(host);
    if (cached && cached.expires > Date.now()) headers.authorization = cached.token;
    let res = await this.send(url, { ...init, headers });
    if (res.status !== 401) return res;
    const challenge = parseAuthenticate(res.headers.get('www-authenticate') ?? '');
    await res.body?.cancel().catch(() => undefined);
    if (challenge.scheme === 'bearer' && challenge.params.realm) {
      const token = await this.token(host, challenge.params, scope, creds);
      this.tokens.set(key, { token: `Bearer ${token.token}`, expires: Date.now() + Math.max(10, token.expiresIn - 10) * 1000 });
      headers.authorization = `Bearer ${token.token}`;
    } else if (challenge.scheme === 'basic') {
      if (!creds) throw new RegistryPullError(`${host} requires credentials: send them with the build (Strata-Registry-Auth)`, 401);
      headers.authorization = basic(creds);
    } else {
      throw new RegistryPullError(`${host} answered 401 with an authentication scheme Strata does not speak ("${challenge.scheme}")`, 401);
    }
    res = await this.send(url, { ...init, headers });
    if (res.status === 401 || res.status === 403) {
      await res.body?.cancel().catch(() => undefined);
      this.tokens.delete(key);
      throw new RegistryPullError(
        creds ? `${host} refused the credentials sent for it (HTTP ${res.status})` : `${host} requires credentials for ${repository} (HTTP ${res.status}): send them with the build (Strata-Registry-Auth)`,
        res.status,
      );
    }
    return res;
  }

  private async token(
    host: string,
    params: Record<string, string>,
    scope: string,
    creds: RegistryCredentials | undefined,
  ): Promise<{ token: string; expiresIn: number }> {
    let realm: URL;
    try {
      realm = new URL(params.realm);
    } catch {
      throw new RegistryPullError(`${host} names an invalid token realm "${params.realm}"`);
    }
    if (params.service) realm.searchParams.set('service', params.service);
    realm.searchParams.set('scope', params.scope ?? scope);
    const headers: Record<string, string> = { 'user-agent': this.opts.userAgent ?? 'strata' };
    if (creds) headers.authorization = basic(creds);
    const res = await this.send(realm.toString(), { method: 'GET', headers });
    const text = await res.text();
    if (!res.ok) {
      throw new RegistryPullError(
        res.status === 401 || res.status === 403
          ? `${host}: the token service refused ${creds ? 'the credentials sent' : 'anonymous access'} (HTTP ${res.status})`
          : `${host}: the token service answered HTTP ${res.status}${errorSummary(text)}`,
        res.status,
      );
    }
    let body: { token?: string; access_token?: string; expires_in?: number };
    try {
      body = JSON.parse(text);
    } catch {
      throw new RegistryPullError(`${host}: the token service did not answer JSON`);
    }
    const token = body.token ?? body.access_token;
    if (!token) throw new RegistryPullError(`${host}: the token service answered without a token`);
    return { token, expiresIn: typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : 60 };
  }

  private async send(url: string, init: RequestInit): Promise<Response> {
    // Bounds the wait for the response to start only: a long blob download is not cut by it.
    const ms = this.opts.responseTimeoutMs ?? 30_000;
    const waiting = new AbortController();
    const timer = setTimeout(() => waiting.abort(), ms);
    try {
      return await this.fetch(url, { ...init, redirect: 'follow', signal: init.signal ? AbortSignal.any([init.signal, waiting.signal]) : waiting.signal });
    } catch (e) {
      const u = new URL(url);
      if (init.signal?.aborted) throw new RegistryPullError('the pull was cancelled');
      if (waiting.signal.aborted) {
        throw new RegistryPullError(`${u.host} did not answer ${init.method ?? 'GET'} ${u.pathname} within ${ms / 1000} s`);
      }
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      throw new RegistryPullError(`cannot reach ${u.host}: ${cause?.code ?? cause?.message ?? (e as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
  }
}

function basic(c: RegistryCredentials): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
}

function errorSummary(text: string): string {
  try {
    const body = JSON.parse(text) as { errors?: Array<{ code?: string; message?: string }> };
    const first = body.errors?.[0];
    if (first) return `: ${first.code ?? ''} ${first.message ?? ''}`.trimEnd();
  } catch {
    /* not the spec's error body */
  }
  return '';
}

/** Requests for one blob before a pull gives up (the first and its retries). */
const BLOB_ATTEMPTS = 4;
const BLOB_RETRY_BACKOFF_MS = 500;

class BodyStalledError extends Error {}

/** The next chunk of a body (null at its end), or BodyStalledError when none comes within `ms`. */
async function readWithin(reader: { read(): Promise<{ done: boolean; value?: Uint8Array }> }, ms: number, signal?: AbortSignal): Promise<Uint8Array | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort: (() => void) | undefined;
  try {
    const read = reader.read().then((r) => (r.done || r.value === undefined ? null : r.value));
    const stalled = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new BodyStalledError('stalled')), ms);
      onAbort = () => reject(new Error('aborted'));
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    return await Promise.race([read, stalled]);
  } finally {
    clearTimeout(timer);
    if (onAbort) signal?.removeEventListener('abort', onAbort);
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
