// ADD <git repository>: the ref resolved to a commit before the cache is asked (so an unchanged
// ref is a hit without fetching, and a moved branch a miss), then on a miss the commit checked out
// by the GitSourceFetcher and its tree placed in the layer as BuildKit's git source gives it: files
// 0644 or 0755 as git checks them out, directories 0755, owned by root unless --chown, --chmod
// applied, every time the commit's (BuildKit's `mtime=commit`), .git only with --keep-git-dir.

import { randomUUID } from 'node:crypto';
import { lstat, mkdir, readdir, readlink } from 'node:fs/promises';
import path from 'node:path/posix';
import type { AddInstruction, GitSource } from '@strata/dockerfile';
import type { LayerEntry } from '@strata/oci';
import type { LayerTree } from './file-layer.js';
import type { GitSourceRequest } from './interfaces.js';
import type { ModeChange } from './file-mode.js';
import type { IgnoreMatcher } from './ignore.js';
import type { BuildScope, StepContext } from './step-context.js';

/** A git source of an ADD, its ref resolved to a commit. */
export interface ResolvedGitSource {
  url: string;
  remote: string;
  ref: string | null;
  subdir: string | null;
  keepGitDir: boolean;
  submodules: boolean;
  mtime: 'commit' | 'checkout';
  commit: string;
  tagObject: string | null;
  fullRef: string | null;
  request: GitSourceRequest;
}

/** A git source that could not be checked out when the layer was written. */
export class GitSourceError extends Error {
  override readonly name = 'GitSourceError';
}

/** Resolves a git source's ref (`git ls-remote` on the worker) and checks what the URL and flags ask for. */
export async function resolveGitSource(ctx: StepContext<AddInstruction>, src: string, source: GitSource): Promise<ResolvedGitSource> {
  const { build, ins, fail } = ctx;
  if (source.problem !== null) fail(`invalid git source "${src}": ${source.problem}`);
  if (ins.keepGitDir !== null && source.keepGitDir !== null && ins.keepGitDir !== source.keepGitDir) {
    fail(`--keep-git-dir=${ins.keepGitDir} contradicts keep-git-dir=${source.keepGitDir} in "${src}"`);
  }
  const fetcher = build.deps.git;
  if (!fetcher) return fail(`${src}: this worker cannot fetch git repositories`);
  const request: GitSourceRequest = {
    remote: source.remote,
    ref: source.ref,
    secrets: build.input.secrets ?? new Map(),
    sshKeys: build.input.sshKeys?.get('default') ?? [],
    ...(build.input.signal ? { signal: build.input.signal } : {}),
  };
  let resolved;
  try {
    resolved = await fetcher.resolve(request);
  } catch (e) {
    return fail(`${src}: ${(e as Error).message}`);
  }
  build.emit({ type: 'log', stage: ctx.where.stage, index: ctx.where.index, stream: 'system', line: `${source.remote}: ${source.ref ?? 'the default branch'} is commit ${resolved.commit}` });
  const checksums = [ins.checksum, source.checksum].filter((c): c is string => c !== null);
  if (checksums.length === 2 && checksums[0] !== checksums[1]) fail(`--checksum=${checksums[0]} contradicts commit=${checksums[1]} in "${src}"`);
  if (checksums.length > 0) {
    const want = checksums[0];
    if (!/^[0-9a-f]{1,64}$/.test(want)) fail(`--checksum="${want}" is not a commit id for a git source (expected hex digits of a commit, or their start)`);
    if (!resolved.commit.startsWith(want) && !(resolved.tagObject ?? '').startsWith(want)) {
      fail(`--checksum: ${src} resolved to commit ${resolved.commit}, which does not start with the ${want} given`);
    }
  }
  return {
    url: src,
    remote: source.remote,
    ref: source.ref,
    subdir: source.subdir,
    keepGitDir: (ins.keepGitDir ?? source.keepGitDir) === true,
    submodules: source.submodules !== false,
    mtime: source.mtime ?? 'commit',
    commit: resolved.commit,
    tagObject: resolved.tagObject,
    fullRef: resolved.fullRef,
    request,
  };
}

/** What a git source puts in the step's cache key: the commit and how it is checked out, never a credential. */
export function gitDefinition(g: ResolvedGitSource): unknown {
  return { remote: g.remote, commit: g.commit, subdir: g.subdir, keepGitDir: g.keepGitDir, submodules: g.submodules, ...(g.mtime === 'checkout' ? { mtime: 'checkout' } : {}) };
}

/** How a placed entry gets its owner and mode: --chown (else root) and --chmod. */
export interface GitPlacement {
  dest: string;
  owner: { uid: number; gid: number } | null;
  chmod: ModeChange | null;
  exclude: IgnoreMatcher;
}

/** Checks the commit out and puts its tree into the layer under the destination directory. */
export async function placeGitSource(build: BuildScope, tree: LayerTree, p: GitPlacement, g: ResolvedGitSource): Promise<void> {
  const dir = `${await build.live.scratch()}/${randomUUID()}.git`;
  await mkdir(dir, { recursive: true });
  let checkout;
  try {
    checkout = await build.deps.git!.checkout({ ...g.request, commit: g.commit, fullRef: g.fullRef, subdir: g.subdir, keepGitDir: g.keepGitDir, submodules: g.submodules }, dir);
  } catch (e) {
    throw new GitSourceError(`${g.url}: ${(e as Error).message}`);
  }
  const mtime = g.mtime === 'checkout' ? Math.floor(Date.now() / 1000) : checkout.commitTime;
  const owner = p.owner ?? { uid: 0, gid: 0 };
  const destDir = tree.resolve(p.dest);
  tree.mkdirAll(destDir);
  const at = (rel: string) => (destDir === '' ? rel : `${destDir}/${rel}`);
  for await (const e of walkTree(checkout.root)) {
    if (p.exclude.ignores(e.rel)) continue;
    const isDir = e.type === 'directory';
    const mode = p.chmod && e.type !== 'symlink' ? p.chmod(e.mode, isDir) : e.mode;
    const base = { path: at(e.rel), ...owner, mtime };
    let entry: LayerEntry;
    if (isDir) entry = { ...base, type: 'directory', mode };
    else if (e.type === 'symlink') entry = { ...base, type: 'symlink', mode: 0o777, target: e.target! };
    else entry = { ...base, type: 'file', mode, content: { path: e.abs } };
    if (entry.type === 'directory') tree.putCopiedDirectory(entry);
    else tree.put(entry);
  }
}

interface TreeEntry {
  rel: string;
  abs: string;
  type: 'file' | 'directory' | 'symlink';
  mode: number;
  target?: string;
}

/** A checked-out tree, parents before children, names sorted; what git cannot store (devices, fifos) is skipped. */
async function* walkTree(root: string, rel = ''): AsyncGenerator<TreeEntry> {
  const names = (await readdir(rel === '' ? root : path.join(root, rel))).sort();
  for (const name of names) {
    const r = rel === '' ? name : `${rel}/${name}`;
    const abs = path.join(root, r);
    const st = await lstat(abs);
    if (st.isSymbolicLink()) yield { rel: r, abs, type: 'symlink', mode: 0o777, target: await readlink(abs) };
    else if (st.isDirectory()) {
      yield { rel: r, abs, type: 'directory', mode: st.mode & 0o7777 };
      yield* walkTree(root, r);
    } else if (st.isFile()) yield { rel: r, abs, type: 'file', mode: st.mode & 0o7777 };
  }
}
