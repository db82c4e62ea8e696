/** Media types of OCI image-spec v1 and their Docker schema 2 equivalents. */
export const MediaType = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerForeignLayerGzip: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
} as const;

export type MediaType = (typeof MediaType)[keyof typeof MediaType];

const manifestTypes: ReadonlySet<string> = new Set([MediaType.ociManifest, MediaType.dockerManifest]);
const indexTypes: ReadonlySet<string> = new Set([MediaType.ociIndex, MediaType.dockerManifestList]);
const layerTypes: ReadonlySet<string> = new Set([
  MediaType.ociLayer,
  MediaType.ociLayerGzip,
  MediaType.ociLayerZstd,
  MediaType.dockerLayerGzip,
  MediaType.dockerForeignLayerGzip,
]);

export function isImageManifestMediaType(mediaType: string): boolean {
  return manifestTypes.has(mediaType);
}

export function isImageIndexMediaType(mediaType: string): boolean {
  return indexTypes.has(mediaType);
}

export function isLayerMediaType(mediaType: string): boolean {
  return layerTypes.has(mediaType);
}

/** Annotation keys from image-spec's annotations.md that Strata reads or writes. */
export const Annotation = {
  refName: 'org.opencontainers.image.ref.name',
  created: 'org.opencontainers.image.created',
  source: 'org.opencontainers.image.source',
  revision: 'org.opencontainers.image.revision',
  baseDigest: 'org.opencontainers.image.base.digest',
  baseName: 'org.opencontainers.image.base.name',
} as const;
