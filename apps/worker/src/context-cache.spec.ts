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

  it('indexes a context once per tenant and digest and hands out its files with their hashes', async () => {
    const cache = new ContextCache(mkdtempSync(path.join(tmpdir(), 'ctxc-')));
    let downloads = 0;
    const tar = tarOf({ 'a.txt': 'a', 'src/b.txt': 'b' });
    const download = async () => {
      downloads++;
      return Readable.from([tar]);
    };
    const [one, two] = await Promise.all([cache.open('t1', 'sha256:aa', download, limits), cache.open('t1', 'sha256:aa', download, limits)]);
    expect(downloads).toBe(1);
    const b = one.index.get('src/b.txt');
    expect(b).toMatchObject({ type: 'file', size: 1, mtime: 1_700_000_000 });
    expect((await two.pack.read(b as { offset: number; size: number })).toString()).toBe('b');
    expect(one.index.get('a.txt')).toMatchObject({ sha256: 'ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb' });
    await one.release();
    await two.release();
    const again = await cache.open('t1', 'sha256:aa', download, limits);
    expect(downloads).toBe(1);
    await again.release();
    // The same bytes from another tenant are its own entry: nothing is shared across tenants.
    await (await cache.open('t2', 'sha256:aa', download, limits)).release();
    expect(downloads).toBe(2);
  });

  it('makes a directory of the context only when asked, once, with the archive modes and mtimes', async () => {
    const cache = new ContextCache(mkdtempSync(path.join(tmpdir(), 'ctxc-')));
    const ctx = await cache.open('t1', 'sha256:01', async () => Readable.from([tarOf({ 'same.txt': 'same', 'sub/x.txt': 'x' })]), limits);
    const dir = await ctx.directory();
    expect(await ctx.directory()).toBe(dir);
    expect(readFileSync(path.join(dir, 'sub/x.txt'), 'utf8')).toBe('x');
    expect(Math.floor(statSync(path.join(dir, 'same.txt')).mtimeMs / 1000)).toBe(1_700_000_000);
    await ctx.release();
  });

  it('refuses a hostile archive and keeps nothing of it', async () => {
    const root = mkdtempSync(path.join(tmpdir(), 'ctxc-'));
    const cache = new ContextCache(root);
    const dir = mkdtempSync(path.join(tmpdir(), 'ctxc-evil-'));
    execFileSync('ln', ['-s', '../../etc', path.join(dir, 'up')]);
    const tar = execFileSync('tar', ['-cf', '-', '-C', dir, '.']);
    await expect(cache.open('t1', 'sha256:ee', async () => Readable.from([tar]), limits)).rejects.toThrow(/points outside/);
    const { readdirSync } = await import('node:fs');
    expect(readdirSync(root)).toEqual([]);
  });
});
