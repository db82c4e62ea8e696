// An image as a user sees it once it is unpacked: the file tree its layers make when applied in
// order (OCI whiteouts and opaque directories honoured) and the run configuration. Both Strata's and
// Docker's images are reduced to this so they can be compared field by field.
// Left out on purpose, because they must differ between two builds: every timestamp (mtime, atime,
// ctime of entries; `created` and history of the config), owner names (uname/gname: numeric ids are
// compared), layer boundaries and digests (the same tree may be cut into layers differently).
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { parseWhiteout, readTarEntries, type TarEntryHeader } from '@strata/oci';

export type NodeType = TarEntryHeader['type'];

/** One path of the tree; the paths of one hard-link group share one node object. */
export interface TreeNode {
  type: Exclude<NodeType, 'hardlink'>;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  sha256: string;
  linkTarget: string;
  device: string;
  xattrs: Record<string, string>;
}

/** Path ("/a/b", no trailing slash) → node. The root itself is not part of the tree. */
export type FileTree = Map<string, TreeNode>;

/** The fields of an image config a container run depends on, and its author (MAINTAINER). */
export interface RunConfig {
  Env?: unknown;
  Cmd?: unknown;
  Entrypoint?: unknown;
  WorkingDir?: unknown;
  User?: unknown;
  ExposedPorts?: unknown;
  Labels?: unknown;
  Volumes?: unknown;
  StopSignal?: unknown;
  Healthcheck?: unknown;
  Shell?: unknown;
  OnBuild?: unknown;
  Author?: unknown;
}

export const CONFIG_FIELDS: (keyof RunConfig)[] = ['Env', 'Cmd', 'Entrypoint', 'WorkingDir', 'User', 'ExposedPorts', 'Labels', 'Volumes', 'StopSignal', 'Healthcheck', 'Shell', 'OnBuild', 'Author'];

export interface ImageView {
  tree: FileTree;
  config: RunConfig;
}

/** A layer's entries with their content reduced to size and hash: what applying it needs. */
interface LayerEntry {
  header: TarEntryHeader;
  sha256: string;
}

function normalPath(name: string): string {
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  return parts.length === 0 ? '' : `/${parts.join('/')}`;
}

async function readLayer(layer: Buffer): Promise<LayerEntry[]> {
  const entries: LayerEntry[] = [];
  for await (const { header, body } of readTarEntries(Readable.from([layer]))) {
    let sha256 = '';
    if (header.type === 'file') {
      const hash = createHash('sha256');
      for await (const chunk of body) hash.update(chunk as Buffer);
      sha256 = hash.digest('hex');
    }
    entries.push({ header, sha256 });
  }
  return entries;
}

// A base layer (the Debian one has thousands of files) is read once per diff ID, not once per case.
const layerCache = new Map<string, Promise<LayerEntry[]>>();

function cachedLayer(diffId: string, layer: () => Buffer): Promise<LayerEntry[]> {
  let hit = layerCache.get(diffId);
  if (!hit) {
    hit = readLayer(layer());
    layerCache.set(diffId, hit);
  }
  return hit;
}

function removeSubtree(tree: FileTree, path: string, keepSelf = false): void {
  if (!keepSelf) tree.delete(path);
  const prefix = `${path}/`;
  for (const p of [...tree.keys()]) if (p.startsWith(prefix)) tree.delete(p);
}

/** Applies one layer on top of `tree`: whiteouts hide lower-layer paths, then the entries are written. */
function applyLayer(tree: FileTree, entries: LayerEntry[]): void {
  // Whiteouts hide what lower layers hold, never this layer's own entries: apply them first.
  for (const { header } of entries) {
    const w = parseWhiteout(normalPath(header.name).slice(1));
    if (w?.kind === 'opaque') removeSubtree(tree, normalPath(w.directory), true);
    else if (w?.kind === 'whiteout') removeSubtree(tree, normalPath(w.removed));
  }
  for (const { header, sha256 } of entries) {
    const path = normalPath(header.name);
    if (path === '' || parseWhiteout(path.slice(1)) !== null) continue;
    const existing = tree.get(path);
    if (existing && !(existing.type === 'directory' && header.type === 'directory')) removeSubtree(tree, path);
    for (let i = path.indexOf('/', 1); i !== -1; i = path.indexOf('/', i + 1)) {
      const parent = path.slice(0, i);
      if (!tree.has(parent)) tree.set(parent, { type: 'directory', mode: 0o755, uid: 0, gid: 0, size: 0, sha256: '', linkTarget: '', device: '', xattrs: {} });
    }
    if (header.type === 'hardlink') {
      const target = tree.get(normalPath(header.linkname));
      if (!target) throw new Error(`layer entry ${header.name} is a hard link to ${header.linkname}, which the tree does not hold`);
      tree.set(path, target);
      continue;
    }
    if (header.type === 'unsupported') throw new Error(`layer entry ${header.name} has a tar type this reader does not know`);
    tree.set(path, {
      type: header.type,
      mode: header.mode,
      uid: header.uid,
      gid: header.gid,
      size: header.type === 'file' ? header.size : 0,
      sha256,
      linkTarget: header.type === 'symlink' ? header.linkname : '',
      device: header.type === 'char-device' || header.type === 'block-device' ? `${header.devmajor}:${header.devminor}` : '',
      xattrs: Object.fromEntries(Object.entries(header.xattrBytes).map(([k, v]) => [k, v.toString('hex')])),
    });
  }
}

/** The tree of layers applied in order; each layer is (diff ID, its bytes, tar or tar+gzip). */
export async function treeOfLayers(layers: { diffId: string; bytes: () => Buffer }[]): Promise<FileTree> {
  const tree: FileTree = new Map();
  for (const layer of layers) applyLayer(tree, await cachedLayer(layer.diffId, layer.bytes));
  return tree;
}

/** The files of a tar (an OCI layout or a `docker save` archive) by path. */
export async function readArchive(stream: Readable): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  for await (const { header, body } of readTarEntries(stream)) {
    if (header.type !== 'file') continue;
    const chunks: Buffer[] = [];
    for await (const chunk of body) chunks.push(chunk as Buffer);
    files.set(normalPath(header.name).slice(1), Buffer.concat(chunks));
  }
  return files;
}

/** The run config's fields from `config` (or docker inspect's Config), the author from the top level. */
function pickConfig(source: Record<string, unknown> | null | undefined, author: unknown): RunConfig {
  const out: RunConfig = {};
  for (const field of CONFIG_FIELDS) {
    const value = field === 'Author' ? author : source?.[field];
    if (value !== undefined && value !== null) out[field] = value;
  }
  return out;
}

function need(files: Map<string, Buffer>, name: string, what: string): Buffer {
  const file = files.get(name);
  if (!file) throw new Error(`${what}: no ${name} in the archive`);
  return file;
}

/** Strata's image from its oci-archive (GET /v1/repositories/{name}/tags/{tag}/oci-archive). */
export async function viewOfOciArchive(archive: Buffer): Promise<ImageView> {
  const files = await readArchive(Readable.from([archive]));
  const blob = (digest: string) => need(files, `blobs/sha256/${digest.replace(/^sha256:/, '')}`, 'oci-archive');
  const index = JSON.parse(need(files, 'index.json', 'oci-archive').toString('utf8'));
  const manifest = JSON.parse(blob(index.manifests[0].digest).toString('utf8'));
  const config = JSON.parse(blob(manifest.config.digest).toString('utf8'));
  const diffIds: string[] = config.rootfs.diff_ids;
  const tree = await treeOfLayers(manifest.layers.map((l: { digest: string }, i: number) => ({ diffId: diffIds[i]!, bytes: () => blob(l.digest) })));
  return { tree, config: pickConfig(config.config, config.author) };
}

/**
 * Docker's image from `docker save` (its layers, in the order of manifest.json) and `docker inspect`
 * (Config and Author): the OCI and Docker configs differ in what they keep (Healthcheck, Shell,
 * OnBuild), so the config is taken from what Docker itself reports.
 */
export async function viewOfDockerSave(savedTar: string, inspected: { Config?: Record<string, unknown>; Author?: string }): Promise<ImageView> {
  const files = await readArchive(createReadStream(savedTar));
  const [manifest] = JSON.parse(need(files, 'manifest.json', 'docker save').toString('utf8'));
  const config = JSON.parse(need(files, manifest.Config, 'docker save').toString('utf8'));
  const diffIds: string[] = config.rootfs.diff_ids;
  const tree = await treeOfLayers(manifest.Layers.map((l: string, i: number) => ({ diffId: diffIds[i]!, bytes: () => need(files, l, 'docker save') })));
  return { tree, config: pickConfig(inspected.Config, inspected.Author) };
}

function octal(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}

/** One line saying what a path is: type, mode, owner, and what only its type has. */
export function describeNode(node: TreeNode, hardLinks: string[]): string {
  const parts = [node.type, octal(node.mode), `${node.uid}:${node.gid}`];
  if (node.type === 'file') parts.push(`size=${node.size}`, `sha256=${node.sha256.slice(0, 12)}`);
  if (node.type === 'symlink') parts.push(`-> ${JSON.stringify(node.linkTarget)}`);
  if (node.device) parts.push(`dev=${node.device}`);
  const xattrs = Object.keys(node.xattrs).sort();
  if (xattrs.length > 0) parts.push(`xattrs={${xattrs.map((k) => `${k}=${node.xattrs[k]!}`).join(',')}}`);
  if (hardLinks.length > 0) parts.push(`hardlinked=[${hardLinks.map((p) => JSON.stringify(p)).join(',')}]`);
  return parts.join(' ');
}

/** Every path with its one-line description, hard-link partners included. */
export function describeTree(tree: FileTree): Map<string, string> {
  const groups = new Map<TreeNode, string[]>();
  for (const [path, node] of tree) groups.set(node, [...(groups.get(node) ?? []), path]);
  const out = new Map<string, string>();
  for (const [path, node] of tree) out.set(path, describeNode(node, groups.get(node)!.filter((p) => p !== path).sort()));
  return out;
}

// What a config holds as the zero value of its Go type in `docker inspect` ("" for a string, {} for a
// map, 0 for a Healthcheck duration) means the same as the field being absent; map keys are unordered.
function normalConfigValue(field: keyof RunConfig, value: unknown): unknown {
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value !== 'object' || Array.isArray(value)) return value;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => field !== 'Healthcheck' || (v !== 0 && v !== undefined && v !== null))
    .sort(([a], [b]) => (a < b ? -1 : 1));
  return entries.length === 0 ? undefined : Object.fromEntries(entries);
}

/**
 * The differences between Strata's and Docker's image, one line each, in path order then config
 * order: `/path: strata <what> | docker <what>` and `config.Field: strata <json> | docker <json>`.
 */
export function compareImages(strata: ImageView, docker: ImageView): string[] {
  const a = describeTree(strata.tree);
  const b = describeTree(docker.tree);
  const paths = [...new Set([...a.keys(), ...b.keys()])].sort();
  const out: string[] = [];
  for (const p of paths) {
    const x = a.get(p) ?? '(absent)';
    const y = b.get(p) ?? '(absent)';
    if (x !== y) out.push(`${p}: strata ${x} | docker ${y}`);
  }
  for (const field of CONFIG_FIELDS) {
    const x = JSON.stringify(normalConfigValue(field, strata.config[field])) ?? '(absent)';
    const y = JSON.stringify(normalConfigValue(field, docker.config[field])) ?? '(absent)';
    if (x !== y) out.push(`config.${field}: strata ${x} | docker ${y}`);
  }
  return out;
}
