import type { Digest } from './digest.js';

/** image-spec descriptor.md */
export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  data?: string;
  artifactType?: string;
  /** Only meaningful in an index's `manifests`. */
  platform?: Platform;
}

/** image-spec image-index.md platform object */
export interface Platform {
  architecture: string;
  os: string;
  'os.version'?: string;
  'os.features'?: string[];
  variant?: string;
  features?: string[];
}

/** image-spec config.md healthcheck (Docker extension, kept by every runtime) */
export interface HealthcheckConfig {
  /** ["NONE"], ["CMD", ...], ["CMD-SHELL", "..."] */
  Test?: string[];
  /** Durations in nanoseconds. */
  Interval?: number;
  Timeout?: number;
  StartPeriod?: number;
  StartInterval?: number;
  Retries?: number;
}

/** The execution parameters in an image config (`config` member). */
export interface ContainerConfig {
  User?: string;
  /** Keys are "port/proto" (e.g. "80/tcp"); values are always empty objects. */
  ExposedPorts?: Record<string, Record<string, never>>;
  Env?: string[];
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Volumes?: Record<string, Record<string, never>>;
  WorkingDir?: string;
  Labels?: Record<string, string>;
  StopSignal?: string;
  ArgsEscaped?: boolean;
  Healthcheck?: HealthcheckConfig;
  OnBuild?: string[] | null;
  Shell?: string[];
}

export interface HistoryEntry {
  /** RFC 3339 */
  created?: string;
  author?: string;
  created_by?: string;
  comment?: string;
  empty_layer?: boolean;
}

export interface RootFs {
  type: 'layers';
  diff_ids: Digest[];
}

/** image-spec config.md */
export interface ImageConfig {
  /** RFC 3339 */
  created?: string;
  author?: string;
  architecture: string;
  os: string;
  'os.version'?: string;
  'os.features'?: string[];
  variant?: string;
  config?: ContainerConfig;
  rootfs: RootFs;
  history?: HistoryEntry[];
}

/** image-spec manifest.md; also the shape of a Docker schema 2 manifest. */
export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

/** image-spec image-index.md; also the shape of a Docker manifest list. */
export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  manifests: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}
