// COPY and ADD: resolving sources (the context or another stage), the destination, owner and mode
// (prepareCopy, which is all the cache key needs), then writing the layer (executeCopy).

import path from 'node:path/posix';
import type { AddInstruction, CopyInstruction } from '@strata/dockerfile';
import { type LayerEntry, LayerWriter } from '@strata/oci';
import { type BuildContext, ContextSourceError, type ContextEntry, IndexedRootfs } from './context.js';
import type { CachedStep } from './interfaces.js';
import { resolveOwner, type RootfsIndex } from './rootfs-index.js';
import type { BuildScope, StageState, StepContext } from './step-context.js';

export interface PreparedCopy {
  sources: ContextEntry[];
  dest: string;
  destIsDir: boolean;
  owner: { uid: number; gid: number };
  chmod: number | null;
  /** The image's paths, owners, passwd and group; read lazily (it downloads layers). */
  index: () => Promise<RootfsIndex>;
  context: BuildContext;
  definition: unknown;
  /** Each source entry's hash, for miss explanations. */
  files: Map<string, string>;
}

/** Resolves a COPY or ADD without writing anything: what its cache key and its execution need. */
export async function prepareCopy(ctx: StepContext<CopyInstruction | AddInstruction>): Promise<PreparedCopy> {
  // Words arrive expanded; ADD URLs, heredoc sources and flags Strata does not implement were refused by the frontend.
  const { ins, build, stage, fail } = ctx;
  let context = build.input.context;
  if (ins.keyword === 'COPY' && ins.from) {
    const from = ins.from;
    const sr = ctx.stageResult(from);
    if (!sr) fail(`--from=${from}: copying from an image is not supported yet; name a stage of this Dockerfile`);
    if (!build.deps.rootfs) fail('COPY --from a stage is not supported by this worker yet');
    const source = await sr!;
    context = new IndexedRootfs(
      await build.indexer.index(source.layers.map((l) => ({ digest: l.descriptor.digest, diffId: l.diffId }))),
      (layer, at) => build.live.content(layer, at),
      async () => (await build.live.stageView(source)).root,
    );
  }
  const cfg = stage.config.config!;
  let dest = ins.dest;
  const destIsDir = dest.endsWith('/') || dest === '.' || dest === '..';
  dest = path.resolve(cfg.WorkingDir || '/', dest);
  const sources: ContextEntry[] = [];
  for (const s of ins.sources) {
    try {
      sources.push(...(await context.resolve(s)));
    } catch (e) {
      if (e instanceof ContextSourceError) fail(e.message);
      throw e;
    }
  }
  if ((sources.length > 1 || ins.sources.length > 1) && !destIsDir) {
    fail(`with more than one source, the destination must be a directory and end with a "/" ("${ins.dest}")`);
  }
  const chmod = ins.chmod ? ins.chmod : null;
  if (chmod !== null && !/^[0-7]{3,4}$/.test(chmod)) fail(`--chmod="${chmod}" is not an octal mode like 755 or 0644`);
  const chown = ins.chown ? ins.chown : null;
  let owner = { uid: 0, gid: 0 };
  // Reading the image's layers costs downloads: only when needed (named owners now, parents on a miss).
  const layers = stage.layers.map((l) => ({ digest: l.descriptor.digest, diffId: l.diffId }));
  const index = () => build.indexer.index(layers);
  if (chown && !/^\d+(:\d+)?$/.test(chown)) {
    try {
      owner = resolveOwner(chown, await index());
    } catch (e) {
      fail(`--chown=${chown}: ${(e as Error).message}`);
    }
  } else if (chown) {
    const [uid, gid] = chown.split(':').map(Number);
    owner = { uid, gid: gid ?? uid };
  }
  const checksum = await context.checksum(sources);
  return {
    sources,
    dest,
    destIsDir,
    owner,
    chmod: chmod === null ? null : parseInt(chmod, 8),
    index,
    context,
    definition: { kind: ins.keyword, dest, destIsDir, chown: owner, chmod, sources: ins.sources, checksum: checksum.digest },
    files: checksum.files,
  };
}

/** Writes the layer of a prepared COPY or ADD and stores it. */
export async function executeCopy(build: BuildScope, stage: StageState, p: PreparedCopy): Promise<CachedStep> {
  const sourceDateEpoch = build.sourceDateEpoch;
  const image = await p.index();
  const entries = new Map<string, LayerEntry>();
  const rel = (abs: string) => abs.replace(/^\/+/, '');
  const epochMtime = sourceDateEpoch ?? 0;
  // Parents of what we write: kept as they are in the image when they exist, created root-owned 0755 otherwise.
  const addParents = (target: string) => {
    const parts = rel(target).split('/').slice(0, -1);
    for (let n = 1; n <= parts.length; n++) {
      const dir = parts.slice(0, n).join('/');
      if (entries.has(dir)) continue;
      const existing = image.paths.get(dir);
      entries.set(dir, existing
        ? { type: 'directory', path: dir, mode: existing.mode, uid: existing.uid, gid: existing.gid, mtime: existing.mtime }
        : { type: 'directory', path: dir, mode: 0o755, uid: 0, gid: 0, mtime: epochMtime });
    }
  };
  const put = (target: string, e: ContextEntry) => {
    const pth = rel(target);
    if (pth === '') return;
    addParents(target);
    const mode = p.chmod ?? e.mode;
    const base = { path: pth, uid: p.owner.uid, gid: p.owner.gid, mtime: e.mtime };
    if (e.type === 'directory') entries.set(pth, { ...base, type: 'directory', mode });
    else if (e.type === 'symlink') entries.set(pth, { ...base, type: 'symlink', target: e.linkTarget!, mode: 0o777 });
    else entries.set(pth, { ...base, type: 'file', mode, content: p.context.content(e) });
  };
  for (const src of p.sources) {
    if (src.type === 'directory') {
      // A directory's contents go into the destination; the destination itself takes the owner.
      const destDir = p.dest;
      if (rel(destDir) !== '') {
        addParents(destDir);
        const existing = image.paths.get(rel(destDir));
        entries.set(rel(destDir), { type: 'directory', path: rel(destDir), mode: existing?.mode ?? 0o755, uid: p.chmod !== null || p.owner.uid !== 0 ? p.owner.uid : existing?.uid ?? 0, gid: p.owner.gid !== 0 ? p.owner.gid : existing?.gid ?? 0, mtime: existing?.mtime ?? epochMtime });
      }
      for await (const e of p.context.walk(src)) {
        if (e === src) continue;
        const sub = e.rel.slice(src.rel === '' ? 0 : src.rel.length + 1);
        put(path.join(destDir, sub), e);
      }
    } else {
      const target = p.destIsDir ? path.join(p.dest, path.basename(src.rel)) : p.dest;
      put(target, src);
    }
  }
  const layerEntries = [...entries.values()];
  // A RUN later in this stage stacks on this layer: unpack it here while it is compressed and stored.
  const rootfs = build.deps.rootfs;
  const adopt = stage.runFollows && rootfs?.adopt ? rootfs.adopt(() => new LayerWriter({ clampMtime: sourceDateEpoch, compression: 'none' }).pack(layerEntries).stream) : null;
  adopt?.catch(() => undefined);
  const layer = await build.live.store(new LayerWriter({ clampMtime: sourceDateEpoch }).pack(layerEntries), layerEntries, sourceDateEpoch);
  // Failing to unpack it here only means the RUN unpacks it itself.
  await adopt?.catch(() => undefined);
  return { layer };
}
