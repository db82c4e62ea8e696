import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { type FileHandle, mkdir, open, opendir, rename, rmdir, stat, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { sendFileRange } from './send-file.js';
import { pipeline } from 'node:stream/promises';
import { checkRange, NotFoundError, SizeMismatchError, validateKey, type ByteRange, type ObjectStat, type OpenedObject, type PutOptions, type StorageDriver } from './storage-driver.js';

const TEMP_DIR = '.strata-tmp';
/** Read in 1 MiB chunks: a 100 MiB layer is 100 reads and writes to the socket, not 1,600. */
const READ_CHUNK = 1024 * 1024;
/**
 * Up to 1 MiB queued per file written: while one write is in the thread pool the next chunks wait
 * and go as one writev, instead of every 64 KiB socket read pausing the upload for its own write.
 */
const WRITE_BUFFER = 1024 * 1024;

/** Stores objects as files under rootDir. Writes go to a temp file first and are renamed into place. */
export class FilesystemDriver implements StorageDriver {
  readonly name = 'filesystem';

  constructor(readonly rootDir: string) {}

  private path(key: string): string {
    validateKey(key);
    if (key === TEMP_DIR || key.startsWith(`${TEMP_DIR}/`)) throw new NotFoundError(key);
    return join(this.rootDir, key);
  }

  /** Set once the temp folder was made by this driver (nothing here removes it). */
  private tempReady = false;

  private async tempPath(): Promise<string> {
    const dir = join(this.rootDir, TEMP_DIR);
    if (!this.tempReady) {
      await mkdir(dir, { recursive: true });
      this.tempReady = true;
    }
    return join(dir, randomUUID());
  }

  /**
   * Renames a finished temp file into place, so readers never see a partial object. The target's
   * folder is made only when the rename says it is missing (most writes go to existing folders).
   */
  private async publish(temp: string, target: string): Promise<void> {
    try {
      await rename(temp, target);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      await mkdir(dirname(target), { recursive: true });
      await rename(temp, target);
    }
  }

  /** Writes a temp file with `write`, then renames it to `key`: readers see all of it or nothing. */
  private async writeAtomically(key: string, write: (temp: string) => Promise<void>, knownSize?: number): Promise<{ size: number }> {
    const target = this.path(key);
    const temp = await this.tempPath();
    try {
      await write(temp);
      const size = knownSize ?? (await stat(temp)).size;
      await this.publish(temp, target);
      return { size };
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      throw err;
    }
  }

  async put(key: string, body: Buffer | Readable, options: PutOptions = {}): Promise<{ size: number }> {
    if (Buffer.isBuffer(body)) {
      if (options.size !== undefined && options.size !== body.length) throw new SizeMismatchError(key, options.size, body.length);
      // A buffer is one write call, not a stream of one chunk.
      return this.writeAtomically(key, (temp) => writeFile(temp, body, { flag: 'wx' }), body.length);
    }
    return this.writeAtomically(key, async (temp) => {
      const sink = createWriteStream(temp, { flags: 'wx', highWaterMark: WRITE_BUFFER });
      await pipeline(body, sink);
      // Checked once the temp file is written (it is removed on mismatch), not per chunk in a Transform.
      if (options.size !== undefined && sink.bytesWritten !== options.size) throw new SizeMismatchError(key, options.size, sink.bytesWritten);
    });
  }

  /**
   * Opens `key` for reading and measures it through the descriptor, so the size checked is the
   * size of what is read. NotFoundError when it is absent or not a file (the handle is closed then).
   */
  private async openFile(key: string): Promise<{ handle: FileHandle; size: number }> {
    let handle: FileHandle;
    try {
      handle = await open(this.path(key), 'r');
    } catch (err) {
      if (isMissing(err)) throw new NotFoundError(key);
      throw err;
    }
    try {
      const stats = await handle.stat();
      if (!stats.isFile()) throw new NotFoundError(key);
      return { handle, size: stats.size };
    } catch (err) {
      await handle.close().catch(() => undefined);
      throw err;
    }
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    const { handle, size } = await this.openFile(key);
    try {
      const { start, end } = checkRange(key, range, size);
      if (end === start) {
        await handle.close();
        return Readable.from([]);
      }
      return handle.createReadStream({ start, end: end - 1, highWaterMark: READ_CHUNK });
    } catch (err) {
      await handle.close().catch(() => undefined);
      throw err;
    }
  }

  async open(key: string): Promise<OpenedObject> {
    const { handle, size } = await this.openFile(key);
    return {
      size,
      sendTo: async (sink, start, end) => {
        try {
          checkRange(key, { offset: start, length: end - start }, size);
          await sendFileRange(handle, sink, start, end, key);
        } finally {
          await handle.close().catch(() => undefined);
        }
      },
      close: () => handle.close().catch(() => undefined),
    };
  }

  async stat(key: string): Promise<ObjectStat | null> {
    try {
      const stats = await stat(this.path(key));
      return stats.isFile() ? { size: stats.size, modified: stats.mtime } : null;
    } catch (err) {
      if (isMissing(err)) return null;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    const path = this.path(key);
    try {
      await unlink(path);
    } catch (err) {
      if (isMissing(err)) return;
      throw err;
    }
    // Tidy empty folders so list() stays cheap; failure just means the folder is not empty.
    for (let dir = dirname(path); dir.startsWith(this.rootDir) && dir !== this.rootDir; dir = dirname(dir)) {
      try {
        await rmdir(dir);
      } catch {
        break;
      }
    }
  }

  async *list(prefix: string): AsyncIterable<string> {
    const slash = prefix.lastIndexOf('/');
    const base = slash === -1 ? '' : prefix.slice(0, slash);
    yield* this.walk(base, prefix);
  }

  private async *walk(dirKey: string, prefix: string): AsyncGenerator<string> {
    let dir;
    try {
      dir = await opendir(dirKey === '' ? this.rootDir : join(this.rootDir, dirKey));
    } catch (err) {
      if (isMissing(err)) return;
      throw err;
    }
    for await (const entry of dir) {
      const key = dirKey === '' ? entry.name : `${dirKey}/${entry.name}`;
      if (key === TEMP_DIR) continue;
      if (entry.isDirectory()) {
        if (key.startsWith(prefix) || prefix.startsWith(`${key}/`)) yield* this.walk(key, prefix);
      } else if (entry.isFile() && key.startsWith(prefix)) {
        yield key;
      }
    }
  }

  async move(src: string, dst: string): Promise<void> {
    const from = this.path(src);
    const to = this.path(dst);
    if ((await this.stat(src)) === null) throw new NotFoundError(src);
    await this.publish(from, to);
  }

  async concat(parts: readonly string[], dst: string): Promise<{ size: number }> {
    return this.writeAtomically(dst, async (temp) => {
      const out = createWriteStream(temp, { flags: 'wx', highWaterMark: WRITE_BUFFER });
      for (const part of parts) {
        const source = await this.get(part);
        await pipeline(source, new Writable({ write: (chunk: Buffer, _e, cb) => (out.write(chunk) ? cb() : out.once('drain', () => cb())) }));
      }
      await new Promise<void>((resolve, reject) => {
        out.once('error', reject);
        out.end(resolve);
      });
    });
  }
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}
