// Build contexts written by code: names with spaces, unicode, newlines or 255-byte components,
// special modes, hard links, xattrs and archives are easier made here than committed to git.
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, linkSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';

/** A context directory being written; every path is relative to its root. */
export class ContextWriter {
  constructor(readonly root: string) {}

  static fresh(): ContextWriter {
    return new ContextWriter(mkdtempSync(path.join(tmpdir(), 'strata-diff-ctx-')));
  }

  private abs(rel: string): string {
    const abs = path.join(this.root, rel);
    mkdirSync(path.dirname(abs), { recursive: true });
    return abs;
  }

  file(rel: string, content: string | Buffer, mode?: number): this {
    const abs = this.abs(rel);
    writeFileSync(abs, content);
    if (mode !== undefined) chmodSync(abs, mode);
    return this;
  }

  dir(rel: string, mode?: number): this {
    const abs = this.abs(rel);
    mkdirSync(abs, { recursive: true });
    if (mode !== undefined) chmodSync(abs, mode);
    return this;
  }

  symlink(rel: string, target: string): this {
    symlinkSync(target, this.abs(rel));
    return this;
  }

  hardlink(rel: string, existing: string): this {
    linkSync(path.join(this.root, existing), this.abs(rel));
    return this;
  }

  chown(rel: string, uid: number, gid: number): this {
    chownSync(path.join(this.root, rel), uid, gid);
    return this;
  }

  /** An extended attribute; `value` as setfattr takes it ("text", 0x…, 0s… for base64). */
  xattr(rel: string, name: string, value: string): this {
    execFileSync('setfattr', ['-n', name, '-v', value, path.join(this.root, rel)]);
    return this;
  }

  /**
   * A tar (gzip when the name ends in .gz/.tgz) of the files given, made by GNU tar with the
   * owner given, as a user would have it in their repository.
   */
  archive(rel: string, files: (w: ContextWriter) => void, owner = { uid: 0, gid: 0 }): this {
    const inner = ContextWriter.fresh();
    files(inner);
    try {
      // Fixed times, order and format: the archive's bytes (which Strata may copy as a file) are the same every run.
      const tar = execFileSync('tar', ['-cf', '-', '--format=gnu', '--sort=name', '--mtime=@0', '--numeric-owner', `--owner=${owner.uid}`, `--group=${owner.gid}`, '-C', inner.root, '.'], { maxBuffer: 256 * 1024 * 1024 });
      writeFileSync(this.abs(rel), /\.(t?gz)$/.test(rel) ? gzipSync(tar) : tar);
    } finally {
      rmSync(inner.root, { recursive: true, force: true });
    }
    return this;
  }
}
