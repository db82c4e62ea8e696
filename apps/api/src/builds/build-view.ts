import type { Build, BuildStep, Repository } from '@strata/db';

/** The JSON shape of a build in the REST API. Field names are a contract: later additions only. */
export interface BuildView {
  id: string;
  repository: string;
  status: string;
  /** Where the context came from: an upload, or the commit a push named. */
  source: BuildSourceView;
  dockerfile: string;
  target: string | null;
  buildArgs: Record<string, string>;
  noCache: boolean;
  noCacheFilter: string[];
  tags: string[];
  platform: string;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  durationMs: number | null;
  steps: Array<{
    stage: number;
    stageName: string | null;
    index: number;
    line: number | null;
    startedAt: string | null;
    instruction: string;
    cached: boolean;
    missReason: string | null;
    durationMs: number | null;
    layerDigest: string | null;
  }>;
  error: { message: string; line: number | null } | null;
  imageDigest: string | null;
  /** The first FROM image as resolved: `source` is `tenant` (a repository of this tenant) or `registry` (pulled). Null for scratch or before it is known. */
  baseImage: { ref: string; digest: string; source: string } | null;
  /** BuildKit lint findings, by position (`docker build` prints them as warnings). */
  warnings: Array<{ line: number; column: number; rule: string | null; message: string }>;
}

export type BuildSourceView =
  | { type: 'upload' }
  | { type: 'git'; provider: string; cloneUrl: string; ref: string; sha: string; message: string; author: string; deliveryId: string; triggerId: string };

function sourceView(build: Pick<Build, 'source' | 'gitSource'>): BuildSourceView {
  if (build.source !== 'git' || !build.gitSource) return { type: 'upload' };
  const g = build.gitSource as Record<string, string>;
  return { type: 'git', provider: g.provider, cloneUrl: g.cloneUrl, ref: g.ref, sha: g.sha, message: g.message, author: g.author, deliveryId: g.deliveryId, triggerId: g.triggerId };
}

export function toBuildView(build: Omit<Build, 'dockerfileText' | 'secretsSealed' | 'registryAuthSealed'> & { repository: Repository; steps?: Array<Omit<BuildStep, 'fingerprint'>> }): BuildView {
  const steps = [...(build.steps ?? [])].sort((a, b) => a.stage - b.stage || a.index - b.index);
  return {
    id: build.id,
    repository: build.repository.name,
    status: build.status,
    source: sourceView(build),
    dockerfile: build.dockerfilePath,
    target: build.target,
    buildArgs: build.buildArgs as Record<string, string>,
    noCache: build.noCache,
    noCacheFilter: build.noCacheFilter,
    tags: build.tags,
    platform: build.platform,
    createdAt: build.createdAt.toISOString(),
    startedAt: build.startedAt?.toISOString() ?? null,
    finishedAt: build.finishedAt?.toISOString() ?? null,
    durationMs: build.startedAt && build.finishedAt ? build.finishedAt.getTime() - build.startedAt.getTime() : null,
    steps: steps.map((s) => ({
      stage: s.stage,
      stageName: s.stageName,
      index: s.index,
      line: s.line,
      startedAt: s.startedAt?.toISOString() ?? null,
      instruction: s.instruction,
      cached: s.cached,
      missReason: s.missReason,
      durationMs: s.durationMs,
      layerDigest: s.layerDigest,
    })),
    error: build.errorMessage ? { message: build.errorMessage, line: build.errorLine } : null,
    imageDigest: build.imageDigest,
    baseImage: build.baseImageRef && build.baseImageDigest ? { ref: build.baseImageRef, digest: build.baseImageDigest, source: build.baseImageSource ?? 'tenant' } : null,
    warnings: (build.warnings as Array<{ line: number; column: number; rule?: string; message: string }>).map((w) => ({ line: w.line, column: w.column, rule: w.rule ?? null, message: w.message })),
  };
}
