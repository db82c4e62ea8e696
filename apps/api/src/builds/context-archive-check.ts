import { BadRequestException, type HttpException, UnsupportedMediaTypeException } from '@nestjs/common';
import { Transform, type TransformCallback } from 'node:stream';
import { constants as zlib, gunzipSync } from 'node:zlib';
import { ARCHIVE_MAGIC_BYTES, archiveMagic, TAR_BLOCK_SIZE, tarHeaderProblem } from '@strata/oci';

/** Compressed prefixes tried in turn: a normal tar.gz shows its first header within the first. */
const GZIP_PREFIXES = [256, 1024, 4096, 16384];
/** Ceiling on what one trial may inflate to: the first header is all that is looked at. */
const GZIP_TRIAL_OUTPUT = 2 * 1024 * 1024;

/**
 * Passes a build context through unchanged while checking that it starts like a tar or a tar.gz:
 * no other archive format's magic, and a first header whose checksum is right (inflating only
 * the start of a tar.gz). On a problem it fails the stream and leaves `refusal`, the 4xx to send,
 * so a body that is no archive is refused while it arrives, not later as a failed build.
 */
export class ContextArchiveCheck extends Transform {
  refusal: HttpException | null = null;
  private head: Buffer[] = [];
  private headBytes = 0;
  private decided = false;

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (!this.decided) {
      this.head.push(chunk);
      this.headBytes += chunk.length;
      const problem = this.inspect(false);
      if (problem) return done(problem);
    }
    done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    // An empty body is the caller's own 400.
    if (!this.decided && this.headBytes > 0) {
      const problem = this.inspect(true);
      if (problem) return done(problem);
    }
    done();
  }

  /** Decides once enough of the head is in (or the body ended); returns the refusal, if any. */
  private inspect(ended: boolean): HttpException | null {
    const head = Buffer.concat(this.head);
    this.head = [head];
    if (head.length < ARCHIVE_MAGIC_BYTES && !ended) return null;
    const magic = archiveMagic(head);
    if (magic !== null && magic !== 'gzip') {
      return this.refuse(new UnsupportedMediaTypeException(`The build context is a ${magic} archive: send a tar, or a tar compressed with gzip.`));
    }
    let tarHead: Buffer;
    if (magic === 'gzip') {
      const inflated = inflateStart(head, ended);
      if (typeof inflated === 'string') return this.refuse(notTar(inflated));
      if (inflated === null) return null;
      if (inflated === UNDECIDED) {
        this.decided = true;
        this.head = [];
        return null;
      }
      tarHead = inflated;
    } else {
      if (head.length < TAR_BLOCK_SIZE && !ended) return null;
      tarHead = head;
    }
    this.decided = true;
    this.head = [];
    if (tarHead.length < TAR_BLOCK_SIZE) {
      return this.refuse(notTar(`it ends after ${tarHead.length} bytes${magic === 'gzip' ? ' once gunzipped' : ''}, before the end of the first ${TAR_BLOCK_SIZE}-byte tar header`));
    }
    const problem = tarHeaderProblem(tarHead);
    return problem ? this.refuse(notTar(problem)) : null;
  }

  private refuse(e: HttpException): HttpException {
    this.decided = true;
    this.head = [];
    this.refusal = e;
    return e;
  }
}

function notTar(reason: string): HttpException {
  return new BadRequestException(`The build context is not a valid tar archive: ${reason}.`);
}

/** The head cannot be judged here; the worker's full read will. */
const UNDECIDED = Symbol('undecided');

/**
 * The first bytes of the tar inside a gzip head: a buffer of at least one block (or all there is,
 * when the body ended), null to wait for more, or why the gzip data is broken.
 */
function inflateStart(head: Buffer, ended: boolean): Buffer | string | typeof UNDECIDED | null {
  for (const n of GZIP_PREFIXES) {
    const slice = head.subarray(0, n);
    let out: Buffer;
    try {
      // A sync flush inflates what a prefix holds without calling its missing end an error.
      out = gunzipSync(slice, { finishFlush: zlib.Z_SYNC_FLUSH, maxOutputLength: GZIP_TRIAL_OUTPUT });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') return UNDECIDED;
      return `the gzip data is corrupt (${(e as Error).message})`;
    }
    if (out.length >= TAR_BLOCK_SIZE) return out;
    if (slice.length < n) return ended ? out : null;
  }
  // A gzip header longer than every prefix (a huge file name field): left to the worker to read.
  return UNDECIDED;
}
