import type { Readable, Writable } from 'node:stream';
import { canonicalJson } from './canonical-json.js';
import { digestHex, DigestingStream, parseDigest, type Digest } from './digest.js';
import { Annotation, isImageIndexMediaType, isImageManifestMediaType, MediaType } from './media-types.js';
import { encodeTarHeader, tarEndOfArchive, tarPadding } from './tar-format.js';
import type { Descriptor, ImageIndex, ImageManifest } from './types.js';

export interface OciLayoutImage {
  /** Descriptor of an image manifest or index; its blobs are found by walking it. */
  descriptor: Descriptor;
  /** Written as `org.opencontainers.image.ref.name` (the tag skopeo/umoci select with `:tag`). */
  refName?: string;
}

export interface OciLayoutSource {
  images: OciLayoutImage[];
  /** Opens a blob by digest; its bytes are verified against the descriptor while copied. */
  openBlob: (digest: Digest) => Promise<Readable>;
  /** Annotations of the top-level index.json. */
  annotations?: Record<string, string>;
}

export interface OciLayoutSummary {
  blobs: number;
  bytes: number;
}

export class BlobVerificationError extends Error {
  override readonly name = 'BlobVerificationError';
  constructor(readonly digest: Digest, reason: string) {
    super(`blob ${digest}: ${reason}`);
  }
}

const DIRECTORY_MODE = 0o755;
const FILE_MODE = 0o644;

/**
 * Streams an OCI image layout (image-spec image-layout.md) as a tar: `oci-layout`, `index.json`
 * and every blob reachable from the given manifests under `blobs/sha256/<hex>`, sorted by digest.
 * Only manifests and indexes are held in memory; layers are copied as streams.
 */
export async function writeOciLayoutTar(source: OciLayoutSource, out: Writable): Promise<OciLayoutSummary> {
  const blobs = new Map<Digest, Descriptor>();
  const documents = new Map<Digest, Buffer>();
  for (const image of source.images) await collectBlobs(image.descriptor, source, blobs, documents);

  const index: ImageIndex = {
    schemaVersion: 2,
    mediaType: MediaType.ociIndex,
    manifests: source.images.map(({ descriptor, refName }) => {
      const entry: Descriptor = { mediaType: descriptor.mediaType, digest: descriptor.digest, size: descriptor.size };
      if (descriptor.platform) entry.platform = descriptor.platform;
      const annotations = { ...descriptor.annotations, ...(refName === undefined ? {} : { [Annotation.refName]: refName }) };
      if (Object.keys(annotations).length > 0) entry.annotations = annotations;
      return entry;
    }),
  };
  if (source.annotations) index.annotations = source.annotations;

  await writeChunk(out, fileEntry('oci-layout', canonicalJson({ imageLayoutVersion: '1.0.0' })));
  await writeChunk(out, fileEntry('index.json', canonicalJson(index)));
  await writeChunk(out, directoryEntry('blobs/'));
  await writeChunk(out, directoryEntry('blobs/sha256/'));
  let bytes = 0;
  const ordered = [...blobs.values()].sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
  for (const descriptor of ordered) {
    await writeChunk(out, encodeTarHeader({ name: `blobs/sha256/${digestHex(descriptor.digest)}`, type: 'file', mode: FILE_MODE, uid: 0, gid: 0, size: descriptor.size, mtime: 0 }));
    const document = documents.get(descriptor.digest);
    if (document) await writeChunk(out, document);
    else await copyVerified(descriptor, await source.openBlob(descriptor.digest), out);
    await writeChunk(out, tarPadding(descriptor.size));
    bytes += descriptor.size;
  }
  await writeChunk(out, tarEndOfArchive());
  await new Promise<void>((resolve, reject) => {
    out.once('error', reject);
    out.end(() => resolve());
  });
  return { blobs: ordered.length, bytes };
}

async function collectBlobs(descriptor: Descriptor, source: OciLayoutSource, blobs: Map<Digest, Descriptor>, documents: Map<Digest, Buffer>): Promise<void> {
  const digest = parseDigest(descriptor.digest);
  if (blobs.has(digest)) return;
  blobs.set(digest, descriptor);
  const isManifest = isImageManifestMediaType(descriptor.mediaType);
  const isIndex = isImageIndexMediaType(descriptor.mediaType);
  if (!isManifest && !isIndex) return;
  const chunks: Buffer[] = [];
  const hasher = new DigestingStream();
  const stream = (await source.openBlob(digest)).pipe(hasher);
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  verify(descriptor, hasher);
  const bytes = Buffer.concat(chunks);
  documents.set(digest, bytes);
  const parsed = JSON.parse(bytes.toString('utf8')) as Partial<ImageManifest & ImageIndex>;
  if (isIndex) {
    for (const child of parsed.manifests ?? []) await collectBlobs(child, source, blobs, documents);
    return;
  }
  if (parsed.config) await collectBlobs(parsed.config, source, blobs, documents);
  for (const layer of parsed.layers ?? []) await collectBlobs(layer, source, blobs, documents);
}

function verify(descriptor: Descriptor, hasher: DigestingStream): void {
  if (hasher.size !== descriptor.size) throw new BlobVerificationError(descriptor.digest, `read ${hasher.size} bytes, descriptor says ${descriptor.size}`);
  if (hasher.digest !== descriptor.digest) throw new BlobVerificationError(descriptor.digest, `content hashes to ${hasher.digest}`);
}

async function copyVerified(descriptor: Descriptor, blob: Readable, out: Writable): Promise<void> {
  const hasher = new DigestingStream();
  const verified = blob.pipe(hasher);
  blob.once('error', (err) => hasher.destroy(err));
  for await (const chunk of verified) {
    if (hasher.size > descriptor.size) {
      blob.destroy();
      throw new BlobVerificationError(descriptor.digest, `longer than the ${descriptor.size} bytes its descriptor says`);
    }
    await writeChunk(out, chunk as Buffer);
  }
  verify(descriptor, hasher);
}

function fileEntry(name: string, bytes: Buffer): Buffer {
  return Buffer.concat([encodeTarHeader({ name, type: 'file', mode: FILE_MODE, uid: 0, gid: 0, size: bytes.length, mtime: 0 }), bytes, tarPadding(bytes.length)]);
}

function directoryEntry(name: string): Buffer {
  return encodeTarHeader({ name, type: 'directory', mode: DIRECTORY_MODE, uid: 0, gid: 0, size: 0, mtime: 0 });
}

/** Writes with backpressure: waits for 'drain' when the destination's buffer is full. */
function writeChunk(out: Writable, chunk: Buffer): Promise<void> {
  if (out.destroyed) return Promise.reject(out.errored ?? new Error('destination stream was destroyed'));
  if (chunk.length === 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    out.once('error', onError);
    const flushed = out.write(chunk, (err) => {
      if (err) reject(err);
    });
    if (flushed) {
      out.off('error', onError);
      resolve();
    } else {
      out.once('drain', () => {
        out.off('error', onError);
        resolve();
      });
    }
  });
}
