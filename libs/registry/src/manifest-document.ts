import { type Descriptor, type Digest, isDigest, isImageIndexMediaType, isImageManifestMediaType, MediaType, sha256Digest } from '@strata/oci';
import { RegistryError } from './errors.js';

export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/** A pushed manifest, checked for shape, with what it references. */
export interface ParsedManifest {
  digest: Digest;
  mediaType: string;
  bytes: Buffer;
  /** Config and layers of an image manifest (must be blobs of the repository). */
  blobs: Descriptor[];
  /** Children of an index (must be manifests of the repository). */
  manifests: Descriptor[];
  configDigest: Digest | null;
  subject: Descriptor | null;
  artifactType: string | null;
}

/** Foreign layers live elsewhere (`urls`); the registry does not hold them. */
const FOREIGN = new Set<string>([MediaType.dockerForeignLayerGzip, 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', 'application/vnd.oci.image.layer.nondistributable.v1.tar']);

function invalid(message: string, detail?: unknown): RegistryError {
  return new RegistryError('MANIFEST_INVALID', message, detail);
}

function descriptor(value: unknown, where: string): Descriptor {
  const d = value as Partial<Descriptor> | null;
  if (typeof d !== 'object' || d === null) throw invalid(`${where} is not a descriptor object`);
  if (typeof d.mediaType !== 'string' || d.mediaType === '') throw invalid(`${where}.mediaType is missing`);
  if (!isDigest(d.digest)) throw invalid(`${where}.digest is not a sha256 digest`, { digest: d.digest });
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) throw invalid(`${where}.size is not a non-negative integer`);
  return d as Descriptor;
}

/**
 * Parses a pushed manifest: OCI image manifests and indexes and Docker schema 2 manifests and
 * manifest lists. `contentType` is the request's Content-Type; `reference` a tag or the digest
 * the client claims.
 */
export function parseManifest(bytes: Buffer, contentType: string | undefined, reference: string): ParsedManifest {
  if (bytes.length > MAX_MANIFEST_BYTES) {
    throw new RegistryError('SIZE_INVALID', `the manifest is ${bytes.length} bytes; at most ${MAX_MANIFEST_BYTES} are accepted`, { size: bytes.length }, 413);
  }
  const digest = sha256Digest(bytes);
  if (reference.includes(':') && reference !== digest) {
    throw new RegistryError('DIGEST_INVALID', `the manifest hashes to ${digest}, not ${reference}`, { expected: reference, actual: digest });
  }
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
  } catch {
    throw invalid('the manifest is not valid JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw invalid('the manifest is not a JSON object');
  if (doc.schemaVersion !== 2) throw invalid(`schemaVersion must be 2, got ${JSON.stringify(doc.schemaVersion)}`);
  const declared = typeof doc.mediaType === 'string' ? doc.mediaType : undefined;
  const type = (contentType ?? '').split(';')[0]!.trim();
  let mediaType = declared ?? type;
  if (mediaType === '' || mediaType === 'application/json') mediaType = Array.isArray(doc.manifests) ? MediaType.ociIndex : MediaType.ociManifest;
  if (declared !== undefined && type !== '' && type !== 'application/json' && declared !== type) {
    throw invalid(`the manifest's mediaType "${declared}" differs from the Content-Type "${type}"`);
  }
  const subject = doc.subject === undefined ? null : descriptor(doc.subject, 'subject');
  const docArtifactType = typeof doc.artifactType === 'string' ? doc.artifactType : null;

  if (isImageManifestMediaType(mediaType)) {
    const config = descriptor(doc.config, 'config');
    if (!Array.isArray(doc.layers)) throw invalid('layers must be an array');
    const layers = doc.layers.map((l, i) => descriptor(l, `layers[${i}]`));
    const blobs = [config, ...layers.filter((l) => !(FOREIGN.has(l.mediaType) && (l.urls?.length ?? 0) > 0))];
    const artifactType = docArtifactType ?? (config.mediaType !== MediaType.ociConfig && config.mediaType !== MediaType.dockerConfig ? config.mediaType : null);
    return { digest, mediaType, bytes, blobs, manifests: [], configDigest: config.digest, subject, artifactType };
  }
  if (isImageIndexMediaType(mediaType)) {
    if (!Array.isArray(doc.manifests)) throw invalid('manifests must be an array');
    const manifests = doc.manifests.map((m, i) => descriptor(m, `manifests[${i}]`));
    return { digest, mediaType, bytes, blobs: [], manifests, configDigest: null, subject, artifactType: docArtifactType };
  }
  throw invalid(`unsupported manifest media type "${mediaType}"`, { mediaType });
}
