// COPY and ADD: resolving sources (the context or another stage, heredocs, URLs through the
// SourceFetcher, git repositories through the GitSourceFetcher: add-git.ts), the destination, owner and mode (prepareCopy, which is all the cache key needs),
// then writing the layer (executeCopy).

import { createHash, randomUUID } from 'node:crypto';
import path from 'node:path/posix';
import type { Readable } from 'node:stream';
import { type AddInstruction, classifyAddSource, type CopyInstruction } from '@strata/dockerfile';
import { type FileContent, type LayerEntry, parseWhiteout, TarExtractionError } from '@strata/oci';
import { openArchive, spoolArchive } from './add-archive.js';
import { gitDefinition, GitSourceError, placeGitSource, type ResolvedGitSource, resolveGitSource } from './add-git.js';
import { type BuildContext, ContextSourceError, type ContextEntry, HardLinks, IndexedRootfs } from './context.js';
import { DestinationError, LayerTree, createdDirTime, storeFileLayer } from './file-layer.js';
import { ChmodError, type ModeChange, parseChmod } from './file-mode.js';
import { cleanRelative, IgnoreMatcher, PatternSyntaxError } from './ignore.js';
import { sha256, skipsCache } from './cache-key.js';
import type { CachedStep, RemoteFileMemo } from './interfaces.js';
import { resolveOwner, type RootfsIndex } from './rootfs-index.js';
import { type BuildScope, sourceOf, type StageState, type StepContext } from './step-context.js';

/** A source entry, and with --parents the directories between its pivot and it, recreated under the destination. */
export interface CopySource {
  entry: ContextEntry;
  /** --parents: the entry's path below the pivot (`a/b` for `./x/./a/b`), and its parent directories in order. */
  parents: { rel: string; dirs: ContextEntry[]; pivot: string } | null;
}

/** A heredoc source (`COPY <<EOF /x`): a file named by its delimiter. */
export interface InlineFile {
  name: string;
  content: Buffer;
}

/** ADD <url>: the file fetched (mode 0600 as BuildKit's HTTP source), named from the URL's path. */
export interface RemoteFile extends RemoteFileMemo {
  url: string;
  name: string;
  /** Where it was downloaded; null when a conditional request found it unchanged (fetched again only if the step misses). */
  file: string | null;
}

/** What --link builds on instead of the stage's image: nothing (BuildKit copies onto scratch and merges). */
const EMPTY_ROOTFS: RootfsIndex = { paths: { get: () => undefined }, passwd: null, group: null, lookup: () => undefined, list: () => [], resolve: (rel) => rel };

export interface PreparedCopy {
  sources: CopySource[];
  inline: InlineFile[];
  remote: RemoteFile[];
  /** ADD <git repository>: refs resolved to commits; checked out only when the step misses. */
  git: ResolvedGitSource[];
  /** --exclude, matched below each source directory. */
  exclude: IgnoreMatcher;
  /** --link: the layer is written without looking at the image below it. */
  link: boolean;
  dest: string;
  destIsDir: boolean;
  /** --chown's owner; without it, directories created are root's and files keep their source's owner. */
  owner: { uid: number; gid: number };
  chown: boolean;
  chmod: ModeChange | null;
  /** ADD from the build context: a source file that is a tar (plain, gzip, bzip2, xz) is unpacked. */
  archive: boolean;
  /** ADD --unpack: a URL's file that is an archive is unpacked too. */
  unpackRemote: boolean;
  /** The image's paths, owners, passwd and group; read lazily (it downloads layers). */
  index: () => Promise<RootfsIndex>;
  context: BuildContext;
  definition: unknown;
  /** Each source entry's hash, for miss explanations. */
  files: ReadonlyMap<string, string>;
}

/** Resolves a COPY or ADD without writing anything: what its cache key and its execution need. */
export async function prepareCopy(ctx: StepContext<CopyInstruction | AddInstruction>): Promise<PreparedCopy> {
  // Words arrive expanded; ADD URLs and flags Strata does not implement were refused by the frontend.
  const { ins, build, stage, fail } = ctx;
  let context: BuildContext;
  if (ins.keyword === 'COPY' && ins.from) {
    const from = ins.from;
    if (!build.deps.rootfs) fail('COPY --from a stage is not supported by this worker yet');
    const source = await sourceOf(ctx, from, `--from=${from}`);
    context = new IndexedRootfs(
      await build.indexer.index(source.layers.map((l) => ({ digest: l.descriptor.digest, diffId: l.diffId }))),
      (layer, at) => build.live.content(layer, at),
      async () => (await build.live.stageView(source)).root,
    );
  } else {
    // The build context may still be arriving: this is where a step first waits for it.
    context = await build.input.context;
  }
  const cfg = stage.config.config!;
  let dest = ins.dest;
  const destIsDir = dest.endsWith('/') || dest === '.' || dest === '..';
  dest = path.resolve(cfg.WorkingDir || '/', dest);
  const parents = ins.keyword === 'COPY' && ins.parents;
  const sources: CopySource[] = [];
  const remote: RemoteFile[] = [];
  const git: ResolvedGitSource[] = [];
  for (const s of ins.sources) {
    const kind = ins.keyword === 'ADD' ? classifyAddSource(s) : null;
    if (kind?.kind === 'url') {
      remote.push(await fetchRemote(ctx as StepContext<AddInstruction>, s));
      continue;
    }
    if (kind?.kind === 'git') {
      git.push(await resolveGitSource(ctx as StepContext<AddInstruction>, s, kind));
      continue;
    }
    try {
      sources.push(...(parents ? await resolveWithParents(context, s) : (await context.resolve(s)).map((entry) => ({ entry, parents: null }))));
    } catch (e) {
      if (e instanceof ContextSourceError) fail(e.message);
      throw e;
    }
  }
  const inline = ins.heredocs.map((h) => ({ name: h.name, content: Buffer.from(h.content) }));
  const count = ins.sources.length + inline.length;
  if ((sources.length + inline.length + remote.length + git.length > 1 || count > 1) && !destIsDir && !parents) {
    fail(`with more than one source, the destination must be a directory and end with a "/" ("${ins.dest}")`);
  }
  let exclude = IgnoreMatcher.fromPatterns([]);
  try {
    exclude = IgnoreMatcher.fromPatterns(ins.excludes);
  } catch (e) {
    if (e instanceof PatternSyntaxError) fail(`--exclude: ${e.message}`);
    throw e;
  }
  // A git source's --checksum (a commit prefix) was checked when its ref was resolved.
  if (ins.keyword === 'ADD' && ins.checksum !== null) {
    if (git.length > 0 && sources.length + inline.length + remote.length > 0) fail('--checksum cannot be used when a git source is added with other sources');
    if (git.length === 0) verifyChecksum(ins.checksum, remote, sources.length + inline.length > 0, fail);
  }
  const chmod = ins.chmod ? ins.chmod : null;
  let mode: ModeChange | null = null;
  try {
    mode = chmod === null ? null : parseChmod(chmod);
  } catch (e) {
    if (e instanceof ChmodError) fail(e.message);
    throw e;
  }
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
  const summed = await context.checksum(sources.map((s) => ({ entry: s.entry, excludeFrom: s.parents ? s.parents.pivot : s.entry.rel })), exclude);
  // The context may hand out a map it keeps (IndexedContext, read-only): copied before anything is added to it.
  let checksum = summed;
  if (git.length > 0) {
    // A moved branch is named when the step misses.
    const files = new Map(summed.files);
    for (const g of git) files.set(g.url, `commit ${g.commit}`);
    checksum = { digest: summed.digest, files };
  }
  const inlineHashes = inline.map((f) => `${f.name}:${createHash('sha256').update(f.content).digest('hex')}`);
  return {
    sources,
    inline,
    remote,
    git,
    exclude,
    link: ins.link,
    dest,
    destIsDir: destIsDir || parents,
    owner,
    chown: chown !== null,
    chmod: mode,
    // ADD unpacks local archives unless --unpack=false, remote ones only with --unpack.
    archive: ins.keyword === 'ADD' && ins.unpack !== false,
    unpackRemote: ins.keyword === 'ADD' && ins.unpack === true,
    index,
    context,
    definition: {
      kind: ins.keyword, dest, destIsDir, chown: owner, chmod, sources: ins.sources, checksum: checksum.digest,
      // Flags only in the definition when set, so existing cache entries keep their keys.
      ...(inline.length > 0 ? { inline: inlineHashes } : {}),
      // A remote file is its content and its time (Last-Modified becomes its mtime).
      ...(remote.length > 0 ? { remote: remote.map((r) => ({ url: r.url, sha256: r.sha256, lastModified: r.lastModified })) } : {}),
      // A repository is the commit its ref resolved to (and how it is checked out).
      ...(git.length > 0 ? { git: git.map(gitDefinition) } : {}),
      ...(ins.excludes.length > 0 ? { excludes: ins.excludes } : {}),
      ...(parents ? { parents: true } : {}),
      ...(ins.link ? { link: true } : {}),
      ...(ins.keyword === 'ADD' && ins.unpack !== null ? { unpack: ins.unpack } : {}),
    },
    files: checksum.files,
  };
}

/**
 * ADD <url>: asks the fetcher, conditionally when this tenant fetched the URL before (its ETag and
 * Last-Modified remembered in the cache index), so an unchanged remote file keeps its digest and the
 * step hits without downloading it.
 */
async function fetchRemote(ctx: StepContext<AddInstruction>, url: string): Promise<RemoteFile> {
  const { build, fail } = ctx;
  const fetcher = build.deps.sources;
  if (!fetcher) return fail(`${url}: this worker cannot fetch URLs`);
  const memoKey = sha256(`strata:add-url\0${url}`);
  const memo = skipsCache(build, ctx.where.stageName) ? undefined : (await build.deps.cache.get(memoKey))?.remote;
  const file = `${await build.live.scratch()}/${randomUUID()}.download`;
  let got;
  try {
    got = await fetcher.fetch(url, file, memo ? { etag: memo.etag, lastModified: memo.lastModified } : undefined);
  } catch (e) {
    return fail(`${url}: ${(e as Error).message}`);
  }
  const name = remoteFileName(url);
  if (got.notModified) {
    if (memo) return { ...memo, url, name, file: null };
    return fail(`${url}: the server answered 304 Not Modified to a request that was not conditional`);
  }
  const fetched: RemoteFileMemo = { sha256: got.sha256, size: got.size, etag: got.etag, lastModified: got.lastModified };
  await build.deps.cache.put(memoKey, { remote: fetched });
  return { ...fetched, url, name, file };
}

/** The file name ADD gives a URL's file: the last component of its path (BuildKit's "__unnamed__" when there is none). */
function remoteFileName(url: string): string {
  const base = path.basename(new URL(url).pathname);
  return base === '' || base === '/' || base === '.' ? '__unnamed__' : decodeURIComponent(base);
}

/** ADD --checksum: only for URLs (as BuildKit), checked against what was fetched. */
function verifyChecksum(checksum: string, remote: RemoteFile[], hasLocal: boolean, fail: (message: string) => never): void {
  const m = /^sha256:([0-9a-f]{64})$/.exec(checksum);
  if (!m) fail(`--checksum="${checksum}" is not a digest like sha256:<64 hex digits>`);
  if (hasLocal || remote.length === 0) fail('--checksum can only be used with a URL source');
  for (const r of remote) {
    if (r.sha256 !== m![1]) fail(`--checksum: ${r.url} has digest sha256:${r.sha256}, not the sha256:${m![1]} given`);
  }
}

/**
 * COPY --parents: what a source matches, each with its path below the pivot (the part after
 * `/./`, or the whole path) and the directories on the way, which BuildKit recreates as the source has them.
 */
async function resolveWithParents(context: BuildContext, source: string): Promise<CopySource[]> {
  const pivotAt = source.indexOf('/./');
  const pivot = pivotAt < 0 ? '' : cleanRelative(source.slice(0, pivotAt));
  const out: CopySource[] = [];
  for (const entry of await context.resolve(source)) {
    const rel = pivot === '' ? entry.rel : entry.rel.slice(pivot.length + 1);
    const parts = rel.split('/');
    const dirs: ContextEntry[] = [];
    for (let n = 1; n < parts.length; n++) {
      const dir = parts.slice(0, n).join('/');
      dirs.push(...(await context.resolve(pivot === '' ? dir : `${pivot}/${dir}`)));
    }
    out.push({ entry, parents: { rel, dirs, pivot } });
  }
  return out;
}

/** Writes the layer of a prepared COPY or ADD and stores it. */
export async function executeCopy(build: BuildScope, stage: StageState, p: PreparedCopy, fail: (message: string) => never): Promise<CachedStep> {
  // --link: destinations are not followed through the image's links, nothing of it is read.
  const tree = new LayerTree(p.link ? EMPTY_ROOTFS : await p.index(), { ...p.owner, mtime: createdDirTime(build) });
  try {
    await planCopy(build, tree, p);
  } catch (e) {
    if (e instanceof DestinationError || e instanceof TarExtractionError || e instanceof RemoteSourceError || e instanceof GitSourceError) fail(e.message);
    throw e;
  }
  return storeFileLayer(build, stage, [...tree.entries.values()]);
}

/** Places every source entry in the layer as BuildKit's copy does. */
async function planCopy(build: BuildScope, tree: LayerTree, p: PreparedCopy): Promise<void> {
  // Hard-linked names of one source, each with the entry its first name was written as.
  const linked: Array<{ member: LayerEntry & { type: 'hardlink' }; first: LayerEntry }> = [];
  const firsts = new Map<string, LayerEntry>();
  const entry = (at: string, e: ContextEntry, links?: HardLinks): LayerEntry => {
    // --chmod applies to everything copied but links; the destination directory keeps its own mode.
    const mode = p.chmod ? p.chmod(e.mode, e.type === 'directory') : e.mode;
    // Without --chown a stage's files keep their owners (BuildKit); context files are root's.
    const owner = p.chown ? p.owner : { uid: e.uid ?? 0, gid: e.gid ?? 0 };
    const base = { path: at, ...owner, mtime: e.mtime };
    if (e.type === 'directory') return { ...base, type: 'directory', mode };
    if (e.type === 'symlink') return { ...base, type: 'symlink', target: e.linkTarget!, mode: 0o777 };
    // A later name of a file this source already copied is a hard link to it, as in BuildKit.
    const first = links?.firstName(e, at) ?? null;
    if (first !== null) {
      const member = { ...base, type: 'hardlink' as const, target: first, mode };
      linked.push({ member, first: firsts.get(first)! });
      return member;
    }
    const file: LayerEntry = { ...base, type: 'file', mode, content: p.context.content(e) };
    if (links && e.inode !== undefined) firsts.set(at, file);
    return file;
  };
  const join = (dir: string, name: string) => (dir === '' ? name : `${dir}/${name}`);
  const putCopied = (placed: LayerEntry) => (placed.type === 'directory' ? tree.putCopiedDirectory(placed) : tree.put(placed));
  for (const { entry: src, parents } of p.sources) {
    if (parents) {
      // --parents: the path below the pivot is kept, its directories copied as the source has them.
      const destDir = tree.resolve(p.dest);
      tree.mkdirAll(destDir);
      for (const [i, dir] of parents.dirs.entries()) {
        const at = join(destDir, parents.rel.split('/').slice(0, i + 1).join('/'));
        if (!tree.entries.has(at)) putCopied(entry(at, dir));
      }
      const at = join(destDir, parents.rel);
      const links = new HardLinks();
      for await (const e of p.context.walk(src, p.exclude, parents.pivot)) putCopied(entry(e === src ? at : join(at, e.rel.slice(src.rel === '' ? 0 : src.rel.length + 1)), e, links));
      continue;
    }
    if (src.type === 'directory') {
      // A directory's contents go into the destination, created (0755, the --chown owner) if missing.
      const destDir = tree.resolve(p.dest);
      tree.mkdirAll(destDir);
      const links = new HardLinks();
      for await (const e of p.context.walk(src, p.exclude)) {
        if (e === src) continue;
        putCopied(entry(join(destDir, e.rel.slice(src.rel === '' ? 0 : src.rel.length + 1)), e, links));
      }
      continue;
    }
    if (p.archive && (await unpackArchive(p.context.content(src), src.rel))) continue;
    const target = fileTarget(src.rel);
    if (target !== '') tree.put(entry(target, src));
  }
  for (const r of p.remote) {
    // ADD --unpack: a remote archive is unpacked like a local one (never without the flag, as BuildKit).
    if (p.unpackRemote && (await unpackArchive({ path: await remoteContent(build, r) }, r.url))) continue;
    const target = fileTarget(r.name);
    if (target === '') continue;
    const owner = p.chown ? p.owner : { uid: 0, gid: 0 };
    const since = r.lastModified === null ? NaN : Date.parse(r.lastModified);
    const mtime = Number.isNaN(since) ? createdDirTime(build) : Math.floor(since / 1000);
    tree.put({ type: 'file', path: target, ...owner, mode: p.chmod ? p.chmod(0o600, false) : 0o600, mtime, content: { path: await remoteContent(build, r) } });
  }
  // A repository's tree goes into the destination directory, as a copied directory's contents do.
  for (const g of p.git) await placeGitSource(build, tree, { dest: p.dest, owner: p.chown ? p.owner : null, chmod: p.chmod, exclude: p.exclude }, g);
  // Heredoc sources: files named by their delimiter, 0644 (BuildKit's inline document) before --chmod.
  for (const f of p.inline) {
    const target = fileTarget(f.name);
    if (target === '') continue;
    const owner = p.chown ? p.owner : { uid: 0, gid: 0 };
    tree.put({ type: 'file', path: target, ...owner, mode: p.chmod ? p.chmod(0o644, false) : 0o644, mtime: createdDirTime(build), content: f.content });
  }
  relinkReplaced(tree, linked);

  /** Unpacks `content` into the destination (named with a slash or not) when it is a tar, plain or compressed; false when it is not one. */
  async function unpackArchive(content: FileContent, name: string): Promise<boolean> {
    const tar = await openArchive(content);
    if (!tar) return false;
    const destDir = tree.resolve(p.dest);
    tree.mkdirAll(destDir);
    try {
      await unpackInto(tree, destDir, tar, `${await build.live.scratch()}/${randomUUID()}.spool`);
    } catch (e) {
      if (e instanceof DestinationError || e instanceof TarExtractionError) throw e;
      // A truncated or corrupt archive is the user's file, not an internal error.
      throw new TarExtractionError(undefined, `"${name}" could not be unpacked: ${(e as Error).message}`);
    }
    return true;
  }

  /** Where a file source named `name` lands: in a destination directory, or at the destination itself. */
  function fileTarget(name: string): string {
    if (p.destIsDir) {
      const dir = tree.resolve(p.dest);
      tree.mkdirAll(dir);
      return join(dir, path.basename(name));
    }
    // A destination that is (or leads to) a directory receives the file under its own name.
    const real = tree.resolve(p.dest);
    return tree.typeAt(real) === 'directory' ? join(real, path.basename(name)) : real;
  }
}

/**
 * A later source may write over the first name of a hard-linked file (BuildKit copies source after
 * source, so the other names keep the file): the first surviving name then carries the file and the
 * rest link to it. A name itself written over is just gone from its group.
 */
function relinkReplaced(tree: LayerTree, linked: Array<{ member: LayerEntry & { type: 'hardlink' }; first: LayerEntry }>): void {
  const carriers = new Map<LayerEntry, string>();
  for (const { member, first } of linked) {
    if (tree.entries.get(member.path) !== member || tree.entries.get(first.path) === first) continue;
    const carrier = carriers.get(first);
    if (carrier === undefined) {
      tree.entries.set(member.path, { ...first, path: member.path });
      carriers.set(first, member.path);
    } else tree.entries.set(member.path, { ...member, target: carrier });
  }
}

/** A URL source that could not be fetched again when the layer was written. */
class RemoteSourceError extends Error {
  override readonly name = 'RemoteSourceError';
}

/** The downloaded file of a remote source; fetched again when a conditional request had found it unchanged. */
async function remoteContent(build: BuildScope, r: RemoteFile): Promise<string> {
  if (r.file !== null) return r.file;
  const file = `${await build.live.scratch()}/${randomUUID()}.download`;
  let got;
  try {
    got = await build.deps.sources!.fetch(r.url, file);
  } catch (e) {
    throw new RemoteSourceError(`${r.url}: ${(e as Error).message}`);
  }
  if (got.notModified || got.sha256 !== r.sha256) throw new RemoteSourceError(`${r.url} changed while this build was running; build again`);
  return file;
}

/**
 * Unpacks an archive's entries under `destDir` as Docker's untar does: owners, modes and times
 * from the archive (not --chown), leading "/" dropped, parents followed through the image's
 * symlinks; an entry escaping with ".." is refused, as are devices, fifos and whiteouts.
 */
async function unpackInto(tree: LayerTree, destDir: string, tar: Readable, spoolPath: string): Promise<void> {
  const at = (name: string): string | null => {
    const parts: string[] = [];
    for (const part of name.split('/')) {
      if (part === '' || part === '.') continue;
      if (part === '..') {
        if (parts.length === 0) throw new TarExtractionError(name, 'path climbs out of the destination');
        parts.pop();
      } else parts.push(part);
    }
    if (parts.length === 0) return null;
    const name_ = parts.pop()!;
    const parent = parts.length === 0 ? destDir : tree.resolve(`/${destDir}/${parts.join('/')}`);
    return parent === '' ? name_ : `${parent}/${name_}`;
  };
  for await (const { header, content } of spoolArchive(tar, spoolPath)) {
    const target = at(header.name);
    if (target === null) continue; // "./": the destination exists already
    if (parseWhiteout(path.basename(target))) throw new TarExtractionError(header.name, 'whiteout entries are not allowed in an ADD archive');
    const meta = { path: target, mode: header.mode, uid: header.uid, gid: header.gid, mtime: Math.floor(header.mtime), ...(Object.keys(header.xattrBytes).length > 0 ? { xattrs: header.xattrBytes } : {}) };
    switch (header.type) {
      case 'directory':
        tree.put({ ...meta, type: 'directory' });
        break;
      case 'file':
        tree.put({ ...meta, type: 'file', content: content! });
        break;
      case 'symlink':
        tree.put({ ...meta, type: 'symlink', target: header.linkname });
        break;
      case 'hardlink': {
        const linked = at(header.linkname);
        if (linked === null || tree.entries.get(linked)?.type !== 'file') throw new TarExtractionError(header.name, `hard link target ${JSON.stringify(header.linkname)} is not a file earlier in the archive`);
        tree.put({ ...meta, type: 'hardlink', target: linked });
        break;
      }
      default:
        throw new TarExtractionError(header.name, `${header.type} entries are not supported in an ADD archive`);
    }
  }
}
