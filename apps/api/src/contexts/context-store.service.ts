import { BadRequestException, HttpException, HttpStatus, Inject, Injectable, UnsupportedMediaTypeException } from '@nestjs/common';
import { createHash, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { PassThrough, Readable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { CONTEXT_PENDING_MANIFEST_MS, contextStaleBefore, STRATA_CONFIG, type StrataConfig } from '@strata/config';
import { PrismaService } from '@strata/db';
import { type ContextManifest, ContextManifestError, parseContextManifest, readTarEntries, TarExtractionError, TarFormatError } from '@strata/oci';
import { readSmallBody } from '../common/body.js';
import { STORAGE, type Storage } from '../storage/storage.provider.js';

/** Most bytes a manifest may take on the wire (gzip) and once inflated: about 1,000,000 entries. */
const MAX_MANIFEST_WIRE_BYTES = 128 * 1024 * 1024;
const MAX_MANIFEST_JSON_BYTES = 512 * 1024 * 1024;
/** How long a manifest refused for missing contents is kept for the build by digest that follows the upload. */
const PENDING_MANIFEST_MS = CONTEXT_PENDING_MANIFEST_MS;
/** Digests looked up per query. */
const LOOKUP_BATCH = 10_000;
const BLOB_NAME = /^(?:sha256:)?([0-9a-f]{64})$/;

export const BLOB_BATCH_TYPES = new Set(['application/x-tar', 'application/tar', 'application/gzip', 'application/x-gzip', 'application/octet-stream']);

export interface StoredBatch {
  /** Contents newly stored for the tenant. */
  stored: number;
  /** Their bytes. */
  bytes: number;
  /** Contents in the batch the tenant already had (or that repeated in the batch). */
  skipped: number;
}

/**
 * The tenant's content store for incremental contexts (docs/adr/0025). Every lookup is by tenant:
 * a tenant asking about a content only another tenant holds hears that it is missing.
 */
@Injectable()
export class ContextStoreService {
  constructor(
    private readonly prisma: PrismaService,
    @Inject(STRATA_CONFIG) private readonly config: StrataConfig,
    @Inject(STORAGE) private readonly storage: Storage,
  ) {}

  /** Reads and checks a manifest body (JSON, or JSON with Content-Encoding: gzip); 400 saying what is wrong. */
  async readManifest(body: Readable, contentEncoding: string | undefined): Promise<ContextManifest & { wire: Buffer }> {
    const encoding = (contentEncoding ?? 'identity').trim().toLowerCase();
    if (encoding !== 'identity' && encoding !== 'gzip') {
      body.resume();
      throw new UnsupportedMediaTypeException(`Content-Encoding "${contentEncoding}" is not supported for a context manifest: send it as is or with gzip.`);
    }
    const wire = await readSmallBody(body, MAX_MANIFEST_WIRE_BYTES, 'context manifest');
    let text: Buffer = wire;
    if (encoding === 'gzip') {
      try {
        text = gunzipSync(wire, { maxOutputLength: MAX_MANIFEST_JSON_BYTES });
      } catch (e) {
        throw new BadRequestException(`The context manifest is not valid gzip data, or inflates past ${MAX_MANIFEST_JSON_BYTES} bytes: ${(e as Error).message}.`);
      }
    }
    if (text.length === 0) throw new BadRequestException('The request body is empty: send the context manifest as JSON {"version": 1, "entries": [...]}.');
    let json: unknown;
    try {
      json = JSON.parse(text.toString('utf8'));
    } catch (e) {
      throw new BadRequestException(`The context manifest is not valid JSON: ${(e as Error).message}.`);
    }
    try {
      // `wire` is what was sent (gzip when it came gzipped): a quarter of the canonical JSON's bytes to store.
      return { ...parseContextManifest(json, { maxEntries: this.config.maxContextEntries, maxBytes: this.config.maxContextBytes }), wire };
    } catch (e) {
      if (e instanceof ContextManifestError) throw new BadRequestException(`Invalid context manifest: ${e.message}.`);
      throw e;
    }
  }

  /**
   * The contents (as "sha256:<hex>") of `digests` this tenant's store lacks, in the order given. A
   * content no build has named for three quarters of the retention counts as missing: the collector
   * may take it (docs/adr/0032), so the client uploads it again, which marks it used.
   */
  async missing(tenantId: string, digests: Iterable<string>): Promise<string[]> {
    const wanted = [...new Set(digests)];
    const have = new Set<string>();
    const fresh = contextStaleBefore(this.config);
    for (let i = 0; i < wanted.length; i += LOOKUP_BATCH) {
      const hex = wanted.slice(i, i + LOOKUP_BATCH).map((d) => d.replace(/^sha256:/, ''));
      // One array parameter, not one parameter per digest: the query stays small for 10,000 digests.
      const rows = await this.prisma.$queryRaw<Array<{ digest: string }>>`
        SELECT digest FROM "ContextBlob" WHERE "tenantId" = ${tenantId}::uuid AND digest = ANY(${hex}::text[]) AND "lastUsedAt" >= ${fresh}`;
      for (const r of rows) have.add(`sha256:${r.digest}`);
    }
    return wanted.filter((d) => !have.has(d));
  }

  /**
   * Refuses (400) a manifest whose contents are not all in the tenant's store, naming a few and
   * listing them all in `missing`. With `keepPending`, the refused manifest is kept for
   * PENDING_MANIFEST_MS (`context-pending/<tenant>/<hex>`), so once the client has uploaded the
   * missing contents it sends the build by the manifest's digest alone instead of the manifest again.
   */
  async assertComplete(tenantId: string, manifest: ContextManifest & { wire?: Buffer }, options: { keepPending?: boolean; dockerfile?: PendingDockerfile | null } = {}): Promise<void> {
    const missing = await this.missing(tenantId, manifest.contents.keys());
    if (missing.length === 0) return;
    const named = missing.slice(0, 5).map((d) => `${d} (${JSON.stringify(manifest.contents.get(d)!.path)})`);
    const kept = options.keepPending && manifest.wire !== undefined ? await this.keepPending(tenantId, { digest: manifest.digest, bytes: manifest.bytes, wire: manifest.wire }, missing, named, options.dockerfile ?? null) : false;
    throw missingContents(missing, named, kept);
  }

  /** Keeps a refused manifest and what it lacked under the tenant's own prefix (the api writes both; no client can). */
  private async keepPending(tenantId: string, manifest: { digest: string; bytes: number; wire: Buffer }, missing: string[], named: string[], dockerfile: PendingDockerfile | null): Promise<boolean> {
    const key = pendingKey(tenantId, manifest.digest);
    try {
      await this.storage.objects.put(key, manifest.wire);
      // Written last: a record is there only when its manifest is.
      await this.storage.objects.put(`${key}.json`, Buffer.from(JSON.stringify({ bytes: manifest.bytes, missing, named, dockerfile })));
      return true;
    } catch {
      // Not kept: the client sends the manifest again, as it did before.
      return false;
    }
  }

  /**
   * The manifest this tenant was refused within PENDING_MANIFEST_MS under `digest`, moved to
   * `contextKey`, when every content it lacked has arrived since (400 naming those still missing,
   * the manifest kept); null when there is none (then the client sends the manifest). The other
   * contents were present when it was refused, which the collector's vouching window (docs/adr/0032:
   * days) keeps true for far longer than PENDING_MANIFEST_MS.
   */
  async takePending(tenantId: string, digest: string, contextKey: string): Promise<{ contextKey: string; size: number; digest: string; dockerfile: PendingDockerfile | null } | null> {
    const key = pendingKey(tenantId, digest);
    const stat = await this.storage.objects.stat(`${key}.json`);
    if (!stat || Date.now() - stat.modified.getTime() > PENDING_MANIFEST_MS) return null;
    let record: { bytes: number; missing: string[]; named: string[]; dockerfile?: PendingDockerfile | null };
    try {
      const chunks: Buffer[] = [];
      for await (const c of await this.storage.objects.get(`${key}.json`)) chunks.push(c as Buffer);
      record = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof record;
    } catch {
      return null;
    }
    const still = await this.missing(tenantId, record.missing);
    if (still.length > 0) {
      const named = record.named.filter((n) => still.includes(n.split(' ')[0]));
      throw missingContents(still, named.length > 0 ? named : still.slice(0, 5), true);
    }
    try {
      // A concurrent build of the same digest may have taken it: then this one hears 409 and sends the manifest.
      await this.storage.objects.move(key, contextKey);
    } catch {
      return null;
    }
    await this.storage.objects.delete(`${key}.json`).catch(() => undefined);
    return { contextKey, size: record.bytes, digest, dockerfile: record.dockerfile ?? null };
  }

  /**
   * Stores a batch of contents: a tar (or tar.gz) whose regular files are each named by the sha256
   * of their content. Each is verified while it streams into one pack object (the contents back to
   * back); nothing is recorded unless every one matched its name. `packBytes` (the header
   * Strata-Pack-Bytes), the sum of the sizes of the batch's distinct contents when the client gives
   * it, lets the pack go to S3 in one PutObject instead of a multipart upload; a batch whose
   * contents add up to another size is refused (400) and nothing is kept.
   */
  async storeBatch(tenantId: string, body: Readable, contentType: string | undefined, packBytesHeader?: string): Promise<StoredBatch> {
    const type = (contentType ?? '').split(';')[0].trim().toLowerCase();
    if (!BLOB_BATCH_TYPES.has(type)) {
      body.resume();
      throw new UnsupportedMediaTypeException(`Send the contents as a tar (application/x-tar) or tar.gz (application/gzip) of files named by their sha256, not "${contentType ?? 'nothing'}".`);
    }
    const maxBytes = this.config.maxContextBytes;
    let packBytes: number | undefined;
    if (packBytesHeader !== undefined) {
      packBytes = /^\d{1,16}$/.test(packBytesHeader.trim()) ? Number(packBytesHeader.trim()) : NaN;
      if (!Number.isSafeInteger(packBytes) || packBytes > maxBytes) {
        body.resume();
        throw new BadRequestException(`Strata-Pack-Bytes "${packBytesHeader.slice(0, 40)}" is not a byte count up to the context limit of ${maxBytes}: give the sum of the sizes of the batch's distinct contents, or leave the header out.`);
      }
    }
    const packKey = `context-store/${tenantId}/${randomUUID()}`;
    const pack = new PassThrough({ highWaterMark: 1024 * 1024 });
    const upload = this.storage.objects.put(packKey, pack, packBytes === undefined ? {} : { size: packBytes });
    upload.catch(() => undefined);
    const rows: Array<{ digest: string; offset: number; size: number }> = [];
    const inBatch = new Set<string>();
    let offset = 0;
    let skipped = 0;
    const announced = (what: string) => new BadRequestException(`The batch's distinct contents add up to ${what} bytes, not the ${packBytes} its Strata-Pack-Bytes header announced.`);
    try {
      let entries = 0;
      for await (const { header, chunks: content } of readTarEntries(body, { maxUncompressedBytes: maxBytes + 64 * 1024 * 1024 })) {
        entries += 1;
        if (header.type === 'directory' && /^\.?\/?$/.test(header.name)) continue;
        const name = BLOB_NAME.exec(header.name.replace(/^\.\//, ''));
        if (header.type !== 'file' || !name) {
          throw new BadRequestException(`Entry ${JSON.stringify(header.name.slice(0, 200))} of the batch is not a regular file named by the sha256 of its content (64 lowercase hex digits).`);
        }
        const hex = name[1];
        if (inBatch.has(hex)) {
          skipped += 1;
          continue;
        }
        inBatch.add(hex);
        const hash = createHash('sha256');
        const start = offset;
        for await (const chunk of content) {
          hash.update(chunk);
          offset += chunk.length;
          if (offset > maxBytes) throw new HttpException({ statusCode: 413, error: 'Payload Too Large', message: `The batch holds more than the context limit of ${maxBytes} bytes.` }, HttpStatus.PAYLOAD_TOO_LARGE);
          if (packBytes !== undefined && offset > packBytes) throw announced(`more than ${packBytes}`);
          if (!pack.write(chunk)) await Promise.race([once(pack, 'drain'), upload]);
        }
        const actual = hash.digest('hex');
        if (actual !== hex) throw new BadRequestException(`Entry ${JSON.stringify(header.name)} of the batch does not match its name: its content's sha256 is ${actual}.`);
        rows.push({ digest: hex, offset: start, size: offset - start });
      }
      if (entries === 0) throw new BadRequestException('The batch holds no files: send a tar of the missing contents, each named by its sha256.');
      if (packBytes !== undefined && offset !== packBytes) throw announced(String(offset));
      pack.end();
      await upload;
    } catch (e) {
      pack.destroy();
      await upload.catch(() => undefined);
      await this.storage.objects.delete(packKey).catch(() => undefined);
      body.resume();
      if (e instanceof TarFormatError || e instanceof TarExtractionError) throw new BadRequestException(`The batch is not a valid tar archive: ${e.message}.`);
      throw e;
    }
    const created = { count: 0 };
    // A content the store already holds stays where it is, unless it is stale (the api no longer
    // vouches for it, the collector may take it): then it moves to this pack and is marked used now.
    const stale = contextStaleBefore(this.config);
    for (let i = 0; i < rows.length; i += 5_000) {
      const slice = rows.slice(i, i + 5_000);
      created.count += await this.prisma.$executeRaw`
        INSERT INTO "ContextBlob" ("tenantId", digest, "packKey", "offset", size)
        SELECT ${tenantId}::uuid, x.digest, ${packKey}, x.at, x.size
        FROM unnest(${slice.map((x) => x.digest)}::text[], ${slice.map((x) => x.offset)}::bigint[], ${slice.map((x) => x.size)}::bigint[]) AS x(digest, at, size)
        ON CONFLICT ("tenantId", digest) DO UPDATE
          SET "packKey" = EXCLUDED."packKey", "offset" = EXCLUDED."offset", size = EXCLUDED.size, "lastUsedAt" = CURRENT_TIMESTAMP
          WHERE "ContextBlob"."lastUsedAt" < ${stale}`;
    }
    // Every content was already there (a retry, or a race with another upload): the pack serves nothing.
    if (created.count === 0) await this.storage.objects.delete(packKey).catch(() => undefined);
    const storedBytes = created.count === rows.length ? offset : await this.bytesIn(tenantId, packKey);
    return { stored: created.count, bytes: storedBytes, skipped: skipped + rows.length - created.count };
  }

  private async bytesIn(tenantId: string, packKey: string): Promise<number> {
    const sum = await this.prisma.contextBlob.aggregate({ where: { tenantId, packKey }, _sum: { size: true } });
    return Number(sum._sum.size ?? 0);
  }

  /** A small content of the tenant's store, whole (a Dockerfile); null when the store has none. */
  async readSmall(tenantId: string, digest: string): Promise<Buffer | null> {
    const content = await this.read(tenantId, digest);
    if (!content) return null;
    const chunks: Buffer[] = [];
    for await (const chunk of content) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  }

  /** One stored content as a stream, or null when the tenant has none. */
  private async read(tenantId: string, digest: string): Promise<Readable | null> {
    const row = await this.prisma.contextBlob.findUnique({ where: { tenantId_digest: { tenantId, digest: digest.replace(/^sha256:/, '') } } });
    if (!row) return null;
    if (row.size === 0n) return Readable.from([]);
    return this.storage.objects.get(row.packKey, { offset: Number(row.offset), length: Number(row.size) });
  }
}

/** The Dockerfile the refused request named, and its content in the manifest (docs/adr/0041). */
export interface PendingDockerfile {
  path: string;
  digest: string;
  size: number;
}

/** Where a refused manifest waits for its contents: under the tenant's own prefix, named by its digest. */
function pendingKey(tenantId: string, digest: string): string {
  return `context-pending/${tenantId}/${digest.replace(/^sha256:/, '')}`;
}

/** 400: the manifest names contents not in the store; `missing` lists them all (the caller's own manifest, looked up in its own store). */
function missingContents(missing: string[], named: string[], kept: boolean): BadRequestException {
  return new BadRequestException({
    statusCode: 400,
    error: 'Bad Request',
    message:
      `The context manifest names ${missing.length} content${missing.length === 1 ? '' : 's'} not in your content store: ${named.join(', ')}${missing.length > named.length ? ', …' : ''}. ` +
      'Upload them with POST /v1/contexts/blobs (POST /v1/contexts/manifest lists what is missing), then send the build again' +
      (kept ? ` (by its Strata-Context-Digest alone: this manifest is kept for ${PENDING_MANIFEST_MS / 60_000} minutes).` : '.'),
    missing,
    pending: kept,
  });
}
