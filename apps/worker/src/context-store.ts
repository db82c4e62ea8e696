import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { type FileHandle, mkdir, open, readdir, rename, rm, stat, utimes } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Storage } from '@strata/blobstore';
import type { ExtractedContext } from './context-cache.js';
import { BuildFailure, IndexedTree } from '@strata/build-engine';
import type { PrismaClient } from '@strata/db';
import { type ContextManifest, ContextManifestError, decodeStoredManifest, indexManifest, type ManifestLimits, materializeIndex, PackReader } from '@strata/oci';

const LOOKUP_BATCH = 10_000;
/** Packs fetched at once. */
const FETCH_CONCURRENCY = 4;

interface Location {
  packKey: string;
  offset: number;
  size: number;
}

/**
 * Turns a manifest build's context (docs/adr/0025, 0028) into a context index whose files point
 * into the tenant's content packs. Packs (the S3 objects contents were uploaded in) are kept on
 * this worker's disk, so a rebuild that needs the same contents downloads nothing; the least
 * recently used go once they hold more than `maxBytes`.
 */
export class ContextPackCache {
  constructor(
    private readonly prisma: PrismaClient,
    private readonly storage: Storage,
    private readonly root: string,
    private readonly maxBytes = 8 * 1024 ** 3,
    private readonly maxTreeEntries = 100_000,
  ) {}

  /** Indexed trees by tenant and manifest digest, least recently used first. */
  private readonly trees = new Map<string, { tree: IndexedTree; packs: string[] }>();

  /** The manifest stored at `key`, checked again (it was checked by the api, but is read from S3). */
  async manifest(key: string, limits: ManifestLimits): Promise<ContextManifest> {
    const chunks: Buffer[] = [];
    for await (const c of await this.storage.objects.get(key)) chunks.push(c as Buffer);
    try {
      return decodeStoredManifest(Buffer.concat(chunks), limits);
    } catch (e) {
      if (e instanceof ContextManifestError || e instanceof SyntaxError) throw new BuildFailure(`the build context manifest was refused: ${e.message}`, null);
      throw e;
    }
  }

  /**
   * The context as an index over the tenant's packs as they lie on this worker's disk (indexManifest):
   * no byte is copied or hashed again, so a rebuild with one file changed costs what that file and
   * the manifest cost. Every pack it needs is downloaded (when absent) and opened before this
   * returns; the reader holds them open, so evicting one meanwhile (an unlink) does not disturb the
   * build. Close the reader when done.
   *
   * The indexed trees of the last contexts built here are kept in memory by tenant and manifest
   * digest (at most `maxTreeEntries` entries in all, with their COPY checksums): an unchanged
   * rebuild reads no manifest, asks the database nothing and walks nothing; it only opens the packs.
   */
  async open(tenantId: string, digest: string | null, manifest: () => Promise<ContextManifest>): Promise<{ tree: IndexedTree; pack: PackReader }> {
    const key = digest === null ? null : `${tenantId}\0${digest}`;
    let known = key === null ? undefined : this.trees.get(key);
    if (known && key !== null) {
      // Most recently used last.
      this.trees.delete(key);
      this.trees.set(key, known);
    }
    if (!known) {
      const m = await manifest();
      const where = await this.locate(tenantId, m);
      const packs = [...new Set([...where.values()].map((l) => l.packKey))];
      const number = new Map(packs.map((k, i) => [k, i]));
      const index = await indexManifest(m, (d) => {
        const at = where.get(d)!;
        return { pack: number.get(at.packKey)!, offset: at.offset };
      });
      known = { tree: new IndexedTree(index), packs };
      if (key !== null) this.remember(key, known);
    }
    const { tree, packs } = known;
    const handles: FileHandle[] = new Array<FileHandle>(packs.length);
    let downloaded = false;
    try {
      for (let i = 0; i < packs.length; i += FETCH_CONCURRENCY) {
        await Promise.all(
          packs.slice(i, i + FETCH_CONCURRENCY).map(async (k, j) => {
            const opened = await this.openPack(k);
            handles[i + j] = opened.handle;
            downloaded ||= opened.downloaded;
          }),
        );
      }
    } catch (e) {
      await Promise.all(handles.filter(Boolean).map((h) => h.close().catch(() => undefined)));
      throw e;
    }
    // Only a download adds bytes: an unchanged rebuild does not list and stat every pack on the disk.
    if (downloaded) void this.trim(new Set(packs));
    return { tree, pack: PackReader.of(handles) };
  }

  private remember(key: string, value: { tree: IndexedTree; packs: string[] }): void {
    this.trees.set(key, value);
    let total = 0;
    for (const v of this.trees.values()) total += v.tree.index.size;
    for (const [k, v] of this.trees) {
      if (total <= this.maxTreeEntries || this.trees.size === 1) break;
      this.trees.delete(k);
      total -= v.tree.index.size;
    }
  }

  /** Where each content is; a content the tenant's store lacks fails the build, naming a path that uses it. */
  private async locate(tenantId: string, manifest: ContextManifest): Promise<Map<string, Location>> {
    const wanted = [...manifest.contents.keys()];
    const where = new Map<string, Location>();
    for (let i = 0; i < wanted.length; i += LOOKUP_BATCH) {
      const hex = wanted.slice(i, i + LOOKUP_BATCH).map((d) => d.slice('sha256:'.length));
      const rows = await this.prisma.$queryRaw<Array<{ digest: string; packKey: string; offset: bigint; size: bigint }>>`
        SELECT digest, "packKey", "offset", size FROM "ContextBlob" WHERE "tenantId" = ${tenantId}::uuid AND digest = ANY(${hex}::text[])`;
      for (const r of rows) where.set(`sha256:${r.digest}`, { packKey: r.packKey, offset: Number(r.offset), size: Number(r.size) });
    }
    for (const [digest, use] of manifest.contents) {
      const at = where.get(digest);
      if (!at) throw new BuildFailure(`the build context's content ${digest} (${JSON.stringify(use.path)}) is not in the tenant's content store`, null);
      if (at.size !== use.size) throw new BuildFailure(`the build context's content ${digest} (${JSON.stringify(use.path)}) is ${at.size} bytes in the store, not ${use.size}`, null);
    }
    return where;
  }

  private localPath(packKey: string): string {
    // context-store/<tenant>/<uuid>: both parts are ours (a uuid each), so the name is safe on disk.
    const [, tenant, id] = packKey.split('/');
    return path.join(this.root, tenant, id);
  }

  /** Opens the pack from local disk, downloading it first when absent (or evicted meanwhile). */
  private async openPack(packKey: string): Promise<{ handle: FileHandle; downloaded: boolean }> {
    const file = this.localPath(packKey);
    for (let attempt = 0; ; attempt++) {
      try {
        const h = await open(file, 'r');
        const now = new Date();
        await utimes(file, now, now).catch(() => undefined);
        return { handle: h, downloaded: attempt > 0 };
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || attempt > 1) throw e;
      }
      await mkdir(path.dirname(file), { recursive: true });
      const tmp = path.join(this.root, `tmp-${randomUUID()}`);
      try {
        // Up to 1 MiB buffered: the response's small chunks go out in few writes (writev), not one each.
        await pipeline(await this.storage.objects.get(packKey), createWriteStream(tmp, { mode: 0o600, highWaterMark: 1024 * 1024 }));
        await rename(tmp, file);
      } finally {
        await rm(tmp, { force: true }).catch(() => undefined);
      }
    }
  }

  /** Removes the least recently used packs beyond `maxBytes` (never those in `keep`). */
  async trim(keep: Set<string> = new Set()): Promise<void> {
    const keepFiles = new Set([...keep].map((k) => this.localPath(k)));
    const files: Array<{ file: string; size: number; used: number }> = [];
    for (const tenant of await readdir(this.root).catch(() => [] as string[])) {
      if (tenant.startsWith('tmp-')) continue;
      for (const name of await readdir(path.join(this.root, tenant)).catch(() => [] as string[])) {
        const file = path.join(this.root, tenant, name);
        const st = await stat(file).catch(() => null);
        if (st) files.push({ file, size: st.size, used: st.mtimeMs });
      }
    }
    let total = files.reduce((n, f) => n + f.size, 0);
    files.sort((a, b) => a.used - b.used);
    for (const f of files) {
      if (total <= this.maxBytes) break;
      if (keepFiles.has(f.file)) continue;
      await rm(f.file, { force: true }).catch(() => undefined);
      total -= f.size;
    }
  }
}

/**
 * A manifest build's context for the engine: the index and packs ContextPackCache.open gave, and a
 * directory (for bind mounts) written into `dir` from them only if a step asks for one.
 */
export function manifestContext(tree: IndexedTree, pack: PackReader, dir: string): ExtractedContext {
  let made: Promise<string> | null = null;
  let closed = false;
  return {
    index: tree.index,
    tree,
    pack,
    directory: () =>
      (made ??= (async () => {
        await rm(dir, { recursive: true, force: true });
        await materializeIndex(tree.index, pack, dir);
        return dir;
      })()),
    release: async () => {
      if (closed) return;
      closed = true;
      await pack.close().catch(() => undefined);
    },
  };
}
