import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { ContextCache } from './context-cache.js';

function tarOf(files: Record<string, string>, mtime = 1_700_000_000): Buffer {
  const dir = mkdtempSync(path.join(tmpdir(), 'ctxc-src-'));
  for (const [rel, content] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    writeFileSync(path.join(dir, rel), content);
  }
  execFileSync('touch', ['-h', '-d', `@${mtime}`, ...Object.keys(files).map((f) => path.join(dir, f))]);
  return execFileSync('tar', ['-cf', '-', '-C', dir, '.']);
}

describe('ContextCache', () => {
  const limits = { maxBytes: 1 << 30, maxEntries: 100_000 };

  it('extracts a context once per digest and hands out the same tree with its file hashes', async () => {
    const cache = new ContextCache(mkdtempSync(path.join(tmpdir(), 'ctxc-')));
    let downloads = 0;
    const tar = tarOf({ 'a.txt': 'a', 'src/b.txt': 'b' });
    const download = async () => {
      downloads++;
      return Readable.from([tar]);
    };
    const [one, two] = await Promise.all([cache.open('t1', 'sha256:aa', download, limits), cache.open('t1', 'sha256:aa', download, limits)]);
    expect(downloads).toBe(1);
    expect(one.dir).toBe(two.dir);
    expect(readFileSync(path.join(one.dir, 'src/b.txt'), 'utf8')).toBe('b');
    expect(one.fileHashes.get('a.txt')).toBe('ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb');
    one.release();
    two.release();
    await cache.open('t1', 'sha256:aa', download, limits);
    expect(downloads).toBe(1);
  });

  it("hard-links a new context's unchanged files from the tenant's previous one, never another tenant's", async () => {
    const cache = new ContextCache(mkdtempSync(path.join(tmpdir(), 'ctxc-')));
    const first = await cache.open('t1', 'sha256:01', async () => Readable.from([tarOf({ 'same.txt': 'same', 'changed.txt': 'v1' })]), limits);
    const second = await cache.open('t1', 'sha256:02', async () => Readable.from([tarOf({ 'same.txt': 'same', 'changed.txt': 'v2' })]), limits);
    const other = await cache.open('t2', 'sha256:03', async () => Readable.from([tarOf({ 'same.txt': 'same' })]), limits);
    expect(statSync(path.join(second.dir, 'same.txt')).ino).toBe(statSync(path.join(first.dir, 'same.txt')).ino);
    expect(statSync(path.join(second.dir, 'changed.txt')).ino).not.toBe(statSync(path.join(first.dir, 'changed.txt')).ino);
    expect(readFileSync(path.join(second.dir, 'changed.txt'), 'utf8')).toBe('v2');
    expect(statSync(path.join(other.dir, 'same.txt')).ino).not.toBe(statSync(path.join(first.dir, 'same.txt')).ino);
  });
});
