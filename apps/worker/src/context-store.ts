import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { type FileHandle, mkdir, open, readdir, rename, rm, stat, utimes } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Storage } from '@strata/blobstore';
import { BuildFailure } from '@strata/build-engine';
import type { PrismaClient } from '@strata/db';
import { type ContextManifest, ContextManifestError, decodeStoredManifest, type ManifestLimits, manifestTar } from '@strata/oci';

/** Contents read whole into memory below this size; larger ones are streamed from the pack. */
const READ_WHOLE_BYTES = 1024 * 1024;
const LOOKUP_BATCH = 10_000;
/** Packs fetched at once. */
const FETCH_CONCURRENCY = 4;

interface Location {
  packKey: string;
  offset: number;
  size: number;
}

/**
 * Turns a manifest build's context (docs/adr/0025) back into the tar an upload would have sent, with
 * the contents from the tenant's store. Packs (the S3 objects contents were uploaded in) are kept on
 * this worker's disk, so a rebuild that needs the same contents downloads nothing; the least
 * recently used go once they hold more than `maxBytes`.
 */
export class ContextPackCache {
  constructor(
    private readonly prisma: PrismaClient,
    private readonly storage: Storage,
    private readonly root: string,
    private readonly maxBytes = 8 * 1024 ** 3,
  ) {}

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

  /** The context as a tar stream; every pack it needs is on local disk before the stream starts. */
  async tar(tenantId: string, manifest: ContextManifest): Promise<Readable> {
    const where = await this.locate(tenantId, manifest);
    const packs = [...new Set([...where.values()].map((l) => l.packKey))];
    const handles = new Map<string, FileHandle>();
    try {
      for (let i = 0; i < packs.length; i += FETCH_CONCURRENCY) {
        await Promise.all(packs.slice(i, i + FETCH_CONCURRENCY).map(async (k) => handles.set(k, await this.openPack(k))));
      }
    } catch (e) {
      await Promise.all([...handles.values()].map((h) => h.close().catch(() => undefined)));
      throw e;
    }
    const stream = manifestTar(manifest, async (digest, size) => {
      const at = where.get(digest)!;
      const h = handles.get(at.packKey)!;
      if (size <= READ_WHOLE_BYTES) {
        const buf = Buffer.allocUnsafe(size);
        let done = 0;
        while (done < size) {
          const { bytesRead } = await h.read(buf, done, size - done, at.offset + done);
          if (bytesRead === 0) break;
          done += bytesRead;
        }
        return buf.subarray(0, done);
      }
      return h.createReadStream({ start: at.offset, end: at.offset + size - 1, autoClose: false, highWaterMark: 256 * 1024 });
    });
    const closeAll = () => {
      for (const h of handles.values()) void h.close().catch(() => undefined);
      void this.trim(new Set(packs));
    };
    stream.once('close', closeAll);
    return stream;
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
  private async openPack(packKey: string): Promise<FileHandle> {
    const file = this.localPath(packKey);
    for (let attempt = 0; ; attempt++) {
      try {
        const h = await open(file, 'r');
        const now = new Date();
        await utimes(file, now, now).catch(() => undefined);
        return h;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || attempt > 1) throw e;
      }
      await mkdir(path.dirname(file), { recursive: true });
      const tmp = path.join(this.root, `tmp-${randomUUID()}`);
      try {
        await pipeline(await this.storage.objects.get(packKey), createWriteStream(tmp, { mode: 0o600 }));
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
