import type { StepFingerprint } from './miss-reason.js';
import type { Readable } from 'node:stream';
import type { Descriptor, Digest, ImageConfig, LayerEntry, PackedLayer } from '@strata/oci';

/** A base image as FROM sees it. */
export interface BaseImage {
  /** The reference as resolved, e.g. `busybox:1` or `127.0.0.1:5000/library/busybox:1`. */
  ref: string;
  /** Where it came from: the tenant's own repository or a registry. */
  source: 'tenant' | 'registry';
  manifestDigest: Digest;
  config: ImageConfig;
  layers: Descriptor[];
}

/** Resolves FROM references (and `COPY --from=<image>`) to images. */
export interface ImageResolver {
  resolve(ref: string): Promise<BaseImage>;
}

/** Where finished layers go: the content-addressed blob store. */
export interface LayerSink {
  /**
   * Stores a packed layer and returns its descriptor once the digest is known. With `stored`, the
   * upload may still be going on: it settles when the layer is durable (open() serves it meanwhile).
   */
  store(layer: PackedLayer): Promise<{ descriptor: Descriptor; diffId: Digest; stored?: Promise<void> }>;
  /** Whether a blob is (still) stored; a cache hit whose layer is gone is a miss. */
  has(digest: Digest): Promise<boolean>;
  open(digest: Digest): Promise<Readable>;
}

/** The validators and digest of a remote file ADD fetched, remembered per URL for conditional requests. */
export interface RemoteFileMemo {
  sha256: string;
  size: number;
  etag: string | null;
  lastModified: string | null;
}

/** A remote file fetched for ADD <url>: written to the file asked for, unless the request was conditional and it is unchanged. */
export type FetchedSource = { notModified: true } | ({ notModified: false } & RemoteFileMemo);

/**
 * Fetches ADD <url> sources, so the engine itself does no network I/O; the worker's goes through
 * libs/egress (the address checked after DNS and on every redirect, size and time limits). Throws
 * an Error whose message says in a sentence what went wrong (refused, too large, too slow, 404).
 */
export interface SourceFetcher {
  /** GETs `url` into `file`; with `validators` a conditional request (If-None-Match, If-Modified-Since). */
  fetch(url: string, file: string, validators?: Pick<RemoteFileMemo, 'etag' | 'lastModified'>): Promise<FetchedSource>;
}

/** ADD <git>: one repository source, as the frontend parsed it, with what the build sent to authenticate. */
export interface GitSourceRequest {
  /** What git is given (the URL without fragment and query). */
  remote: string;
  /** A branch, tag, full commit or `refs/…`; null for the remote's default branch. */
  ref: string | null;
  /**
   * The build's secrets: GIT_AUTH_TOKEN.<host>, GIT_AUTH_HEADER.<host>, GIT_AUTH_TOKEN and
   * GIT_AUTH_HEADER are used as BuildKit uses them; never in a cache key, a log or a layer.
   */
  secrets: ReadonlyMap<string, Buffer>;
  /** The build's `default` SSH keys (`--ssh default=…`), for ssh remotes; held by an agent, never written to disk. */
  sshKeys: readonly Buffer[];
  signal?: AbortSignal;
}

/** What a ref resolved to (`git ls-remote`): the commit, and the tag object when the ref is an annotated tag. */
export interface ResolvedGitRef {
  commit: string;
  tagObject: string | null;
  /** The full ref it matched (`refs/heads/main`, `refs/tags/v1`); null for a commit id. */
  fullRef: string | null;
}

export interface GitCheckoutRequest extends GitSourceRequest {
  commit: string;
  /** With keepGitDir, the kept repository names the commit under this ref too. */
  fullRef: string | null;
  subdir: string | null;
  keepGitDir: boolean;
  submodules: boolean;
}

/** A commit checked out for ADD: the tree the image receives and the commit's time. */
export interface GitCheckout {
  /** A directory holding exactly what is copied: the subdirectory when one was asked for, `.git` only with keepGitDir. */
  root: string;
  /** The committer time, seconds since the epoch. */
  commitTime: number;
}

/**
 * Git sources of ADD, so the engine does no network I/O itself; the worker's runs the git CLI
 * through libs/egress (addresses checked after DNS and pinned). Throws an Error whose message says
 * in a sentence what went wrong (unknown ref, authentication, unreachable host, refused address).
 */
export interface GitSourceFetcher {
  /** The commit the ref names now, without fetching the repository (`git ls-remote`). */
  resolve(req: GitSourceRequest): Promise<ResolvedGitRef>;
  /** Fetches exactly that commit (shallow) and checks it out under `dir`, a new empty directory. */
  checkout(req: GitCheckoutRequest, dir: string): Promise<GitCheckout>;
}

/** What a cache entry remembers of a step. */
export interface CachedStep {
  /** Not a step: what ADD last fetched from a URL (kept under a key of the URL). */
  remote?: RemoteFileMemo;
  /** Set for steps that produced a layer. */
  layer?: { descriptor: Descriptor; diffId: Digest };
  /** Set for steps that changed the filesystem key without adding a layer (a RUN that changed nothing). */
  emptyLayer?: boolean;
  /** When the step ran (RFC 3339): a cache hit keeps it in the image history, as BuildKit does. */
  created?: string;
}

/** The per-tenant cache index: step cache key → result. */
export interface CacheIndex {
  get(key: string): Promise<CachedStep | null>;
  /** True when `get` already answers null for an entry whose layer blob is gone (the engine then need not ask the store). */
  readonly checksLayers?: boolean;
  put(key: string, value: CachedStep): Promise<void>;
}

/** A read-only view of a stage's or image's root filesystem, for COPY --from. */
export interface RootfsView {
  root: string;
  release(): Promise<void>;
}

/** Mounts (or unpacks) layers so their files can be read. */
export interface RootfsProvider {
  /** `open`, when set, gives a layer's tar (gzip or not) from where this build has it. */
  open(layers: Array<{ descriptor: Descriptor; diffId: Digest; open?: () => Readable | Promise<Readable> }>): Promise<RootfsView>;
  /**
   * Unpacks a layer the build is writing now, from its uncompressed tar, so a RUN stacked on it
   * finds it ready; done alongside storing it.
   */
  adopt?(tar: () => Readable): Promise<void>;
}

/** A `RUN --mount` as the executor receives it: sources already resolved by the engine. */
export type RunMountRequest =
  /** Kept on the worker per tenant and `id` across builds. */
  | { type: 'cache'; target: string; id: string; sharing: 'shared' | 'private' | 'locked'; readOnly: boolean; uid: number; gid: number; mode: number }
  | { type: 'tmpfs'; target: string; sizeBytes?: number }
  /**
   * `source` is an absolute path on the worker (in the build context or a stage's rootfs view).
   * `throwaway`: the step writes into a copy of `source` that is deleted after it (a read-write context bind).
   */
  | { type: 'bind'; target: string; source: string; readOnly: boolean; throwaway?: boolean }
  /**
   * A build secret: a read-only file at `target` (kept on a tmpfs outside the rootfs, never in the
   * layer) and/or the environment variable `env`. `value` never goes into a cache key or a log.
   */
  | { type: 'secret'; id: string; target: string | null; env: string | null; value: Buffer; uid: number; gid: number; mode: number }
  /**
   * An SSH agent holding `keys`, its socket at `target` (owned by uid:gid with `mode`); the keys
   * never go into a cache key, a log or the layer.
   */
  | { type: 'ssh'; id: string; target: string; keys: readonly Buffer[]; uid: number; gid: number; mode: number }
  /** A file made for the step (a `#!` heredoc script), read-only at `target`, owned by root, never in the layer. */
  | { type: 'file'; target: string; content: Buffer; mode: number };

export interface RunRequest {
  /** `open`, when set, gives the layer's uncompressed tar from where the build wrote it (faster than the store). */
  layers: Array<{ descriptor: Descriptor; diffId: Digest; open?: () => Readable | Promise<Readable> }>;
  mounts?: RunMountRequest[];
  args: string[];
  env: string[];
  user: string;
  cwd: string;
  network: 'default' | 'none' | 'host';
  /** `RUN --security=insecure`: a privileged container (the worker checks that its operator allows it). */
  security?: 'insecure';
  line: number;
  /** Each line of output; a Promise answered asks the executor to read no more until it settles (the log is behind); anything else is ignored. */
  onOutput(stream: 'stdout' | 'stderr', line: string): unknown;
  signal: AbortSignal;
}

export interface RunOutcome {
  exitCode: number;
  oomKilled?: boolean;
  timedOut?: boolean;
  /** A fork failed at the pids limit. */
  pidsLimitHit?: boolean;
  /** Killed because the build's signal was aborted. */
  cancelled?: boolean;
  /** The step's changes as layer entries; empty when it changed nothing. */
  entries: LayerEntry[];
  /** Releases what the step left on disk once its layer is written. */
  release(): Promise<void>;
  /**
   * Instead of release: keeps what the step wrote on this worker as the unpacked layer `diffId`,
   * so the next step stacks on it without fetching the layer back.
   */
  keep?(diffId: string, sizeBytes: number): Promise<void>;
}

/** Runs RUN steps in containers. */
export interface RunExecutor {
  run(req: RunRequest): Promise<RunOutcome>;
}

export type BuildEvent =
  | { type: 'step-start'; stage: number; index: number; instruction: string; line: number }
  | {
      type: 'step-done';
      stage: number;
      stageName: string | null;
      index: number;
      line: number;
      instruction: string;
      cacheKey: string;
      cached: boolean;
      missReason: string | null;
      fingerprint: StepFingerprint;
      startedAt: Date;
      durationMs: number;
      layerDigest: string | null;
      /** Size of the layer blob as stored, when the step has a layer. */
      layerSize?: number | null;
    }
  | { type: 'log'; stage: number; index: number; stream: 'stdout' | 'stderr' | 'system'; line: string };

/** A build failure the user caused, with the Dockerfile line it happened at. */
export class BuildFailure extends Error {
  override readonly name = 'BuildFailure';
  constructor(
    message: string,
    readonly line: number | null,
  ) {
    super(message);
  }
}

/**
 * Thrown by a RunExecutor when the step cannot run because of what the Dockerfile asked for (an
 * unknown USER, a mount the worker does not allow, a command that is not in the image): the engine
 * reports it as a build failure on the RUN's line, not as an internal error.
 */
export class RunStepError extends Error {
  override readonly name = 'RunStepError';
}
