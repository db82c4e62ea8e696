import type { Readable } from 'node:stream';
import { type Digest, parseWhiteout, readTarEntries } from '@strata/oci';

export interface IndexedPath {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
}

/** Paths that exist in an image's filesystem, with their metadata, plus /etc/passwd and /etc/group. */
export interface RootfsIndex {
  paths: Map<string, IndexedPath>;
  passwd: string | null;
  group: string | null;
}

const KEEP_CONTENT = new Set(['etc/passwd', 'etc/group']);

async function readBody(body: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of body) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Indexes an image's layers (base first) without unpacking them: COPY needs to know which parent
 * directories exist (so a layer never resets /tmp's mode, say) and who users and groups are.
 * Indexes of layer prefixes are memoised: every step of a stage shares its base's index.
 */
export class RootfsIndexer {
  private readonly memo = new Map<string, Promise<RootfsIndex>>();

  constructor(private readonly open: (digest: Digest) => Promise<Readable>) {}

  index(layers: Array<{ digest: Digest; diffId: Digest }>): Promise<RootfsIndex> {
    if (layers.length === 0) return Promise.resolve({ paths: new Map(), passwd: null, group: null });
    const key = layers.map((l) => l.diffId).join(',');
    let p = this.memo.get(key);
    if (!p) {
      p = this.build(layers);
      this.memo.set(key, p);
      p.catch(() => this.memo.delete(key));
      if (this.memo.size > 256) this.memo.delete(this.memo.keys().next().value as string);
    }
    return p;
  }

  private async build(layers: Array<{ digest: Digest; diffId: Digest }>): Promise<RootfsIndex> {
    const below = await this.index(layers.slice(0, -1));
    const top = layers[layers.length - 1];
    const paths = new Map(below.paths);
    let { passwd, group } = below;
    for await (const { header, body } of readTarEntries(await this.open(top.digest))) {
      const name = header.name.replace(/^\.\//, '').replace(/^\/+/, '');
      const wh = parseWhiteout(name);
      if (wh) {
        const gone = wh.kind === 'opaque' ? wh.directory : wh.removed;
        if (wh.kind === 'whiteout') paths.delete(gone);
        for (const p of [...paths.keys()]) if (p.startsWith(`${gone}/`)) paths.delete(p);
        body.resume();
        continue;
      }
      if (name === '' || name === '.') {
        body.resume();
        continue;
      }
      paths.set(name, { type: header.type, mode: header.mode, uid: header.uid, gid: header.gid, mtime: Math.floor(header.mtime) });
      if (KEEP_CONTENT.has(name) && header.type === 'file') {
        const text = await readBody(body);
        if (name === 'etc/passwd') passwd = text;
        else group = text;
      } else body.resume();
    }
    return { paths, passwd, group };
  }
}

/** Resolves `user[:group]` (names or ids) to numeric ids through the image's passwd and group files. */
export function resolveOwner(spec: string, index: RootfsIndex): { uid: number; gid: number } {
  const [userPart, groupPart] = spec.split(':', 2);
  const lookup = (file: string | null, name: string, what: string): { id: number; gid?: number } => {
    if (/^\d+$/.test(name)) return { id: Number(name) };
    for (const line of (file ?? '').split('\n')) {
      const f = line.split(':');
      if (f[0] === name && f.length >= 3) return { id: Number(f[2]), gid: what === 'user' && f[3] ? Number(f[3]) : undefined };
    }
    throw new Error(`${what} "${name}" is not in the image's /etc/${what === 'user' ? 'passwd' : 'group'}`);
  };
  const u = lookup(index.passwd, userPart, 'user');
  if (groupPart !== undefined && groupPart !== '') return { uid: u.id, gid: lookup(index.group, groupPart, 'group').id };
  // A user without a group gets the user's primary group when named, else the same number.
  return { uid: u.id, gid: u.gid ?? u.id };
}
