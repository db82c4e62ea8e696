import type { Descriptor, Digest, ImageConfig } from '@strata/oci';
import type { BuildContext } from './context.js';
import type { BuildEvent, CacheIndex, GitSourceFetcher, ImageResolver, LayerSink, RootfsProvider, RunExecutor, SourceFetcher } from './interfaces.js';
import type { StepFingerprint } from './miss-reason.js';
import type { RootfsIndexer } from './rootfs-index.js';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface BuildInput {
  dockerfile: string;
  /** Name of the Dockerfile in the context, for messages. */
  dockerfilePath: string;
  /**
   * The build context, or a promise of it while it is still being fetched: steps that do not read
   * it (FROM, RUN without a context mount, ENV) run meanwhile, as BuildKit resolves its context
   * source only when a step needs it. A context that fails to arrive fails the first step that reads it.
   */
  context: BuildContext | Promise<BuildContext>;
  buildArgs: Record<string, string>;
  target?: string;
  noCache?: boolean;
  /** Stages (by name) whose steps skip the cache, like BuildKit's --no-cache-filter. */
  noCacheStages?: string[];
  platform?: Platform;
  signal?: AbortSignal;
  /** Secrets sent with the build, by id, for `RUN --mount=type=secret`: values never enter a cache key. */
  secrets?: ReadonlyMap<string, Buffer>;
  /** Private keys sent with the build, by id, for `RUN --mount=type=ssh`: never in a cache key. */
  sshKeys?: ReadonlyMap<string, readonly Buffer[]>;
  /**
   * Called once the target stage's steps are done, while the build still waits for its layer
   * uploads and cache entries (storing the image's config and manifest blobs, say); the build
   * returns when both are done and fails when either fails. Nothing may name the image before
   * the build returns: its layers may not all be stored yet.
   */
  whileSettling?: (image: StageResult) => Promise<unknown>;
}

export interface EngineDeps {
  images: ImageResolver;
  layers: LayerSink;
  cache: CacheIndex;
  /** Most stages of one build run at once (independent stages run in parallel). Default 4. */
  maxParallelStages?: number;
  executor?: RunExecutor;
  rootfs?: RootfsProvider;
  /** ADD <url>: fetches remote files; without it such a step fails saying so. */
  sources?: SourceFetcher;
  /** ADD <git repository>: resolves refs and checks commits out; without it such a step fails saying so. */
  git?: GitSourceFetcher;
  /** Every event as it happens; a Promise answered for a `log` event slows the RUN step that printed it until it settles. */
  onEvent?: (e: BuildEvent) => unknown;
  /** The same step in the previous build of this repository and target, to explain misses (asked only when a step misses). */
  previousStep?: (stage: number, index: number) => StepFingerprint | null | Promise<StepFingerprint | null>;
  /** Wall clock, replaceable for tests. */
  now?: () => Date;
  /** Layer indexes shared by every build of a worker; by default one per engine. */
  indexer?: RootfsIndexer;
  /** The operator allows `RUN --network=host` (otherwise the frontend refuses it, as /v1/dockerfile/check does). */
  allowHostNetwork?: boolean;
  /** The operator allows `RUN --security=insecure` (privileged steps); otherwise the frontend refuses it. */
  allowInsecure?: boolean;
}

/** A layer of an image being built: its blob and its uncompressed digest. */
export interface ImageLayer {
  descriptor: Descriptor;
  diffId: Digest;
}

export interface StageResult {
  index: number;
  name: string | null;
  config: ImageConfig;
  layers: ImageLayer[];
  /** Cache key of the stage's filesystem: what a dependent stage's steps chain from. */
  fsKey: string;
}

export interface BuildOutput {
  image: StageResult;
  base: { ref: string; source: string; manifestDigest: string } | null;
  warnings: Array<{ line: number; message: string }>;
}
