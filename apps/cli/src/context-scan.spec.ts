import { createHash } from 'node:crypto';
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, symlinkSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { hashFiles, scanContext, walkContext } from './context-scan.js';
import { StatCache } from './stat-cache.js';

const sha = (s: string) => `sha256:${createHash('sha256').update(s).digest('hex')}`;
const OLD = 1_700_000_000;

function tree(files: Record<string, string>): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'strata-scan-'));
  for (const [rel, content] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    writeFileSync(path.join(dir, rel), content);
    utimesSync(path.join(dir, rel), OLD, OLD);
  }
  return dir;
}

describe('scanContext and the stat cache', () => {
  let cacheDir: string;
  beforeEach(() => {
    cacheDir = mkdtempSync(path.join(tmpdir(), 'strata-statcache-'));
  });

  it('lists every path with mode, mtime and digest, sorted, a content once among the sources', async () => {
    const dir = tree({ Dockerfile: 'FROM scratch\n', 'a/b.txt': 'b', 'a/c.txt': 'b' });
    symlinkSync('b.txt', path.join(dir, 'a/link'));
    const scan = await scanContext(dir, await StatCache.open(null, dir), { dockerfile: 'Dockerfile' });
    expect(scan.manifest.entries.map((e) => [e.path, e.type])).toEqual([
      ['.', 'dir'],
      ['Dockerfile', 'file'],
      ['a', 'dir'],
      ['a/b.txt', 'file'],
      ['a/c.txt', 'file'],
      ['a/link', 'symlink'],
    ]);
    const b = scan.manifest.entries.find((e) => e.path === 'a/b.txt');
    expect(b).toEqual({ path: 'a/b.txt', type: 'file', mode: 0o644 & ~process.umask(), mtime: OLD, size: 1, digest: sha('b') });
    expect(scan.manifest.entries.find((e) => e.path === 'a/link')).toMatchObject({ target: 'b.txt' });
    expect(scan.sources.size).toBe(2);
    expect(scan.files).toBe(3);
    expect(scan.hashed).toBe(3);
  });

  it('hashes nothing on a second scan of an unchanged tree, and only the changed file after an edit', async () => {
    const files: Record<string, string> = { Dockerfile: 'FROM scratch\n' };
    for (let i = 0; i < 50; i++) files[`src/f${i}`] = `content ${i}`;
    const dir = tree(files);
    const first = await StatCache.open(cacheDir, dir);
    const s1 = await scanContext(dir, first, { dockerfile: 'Dockerfile' });
    await first.save(dir);
    expect(s1.hashed).toBe(51);

    const second = await StatCache.open(cacheDir, dir);
    const s2 = await scanContext(dir, second, { dockerfile: 'Dockerfile' });
    await second.save(dir);
    expect(s2.hashed).toBe(0);
    expect(s2.manifest).toEqual(s1.manifest);

    writeFileSync(path.join(dir, 'src/f7'), 'changed, same mtime');
    utimesSync(path.join(dir, 'src/f7'), OLD, OLD);
    const third = await StatCache.open(cacheDir, dir);
    const s3 = await scanContext(dir, third, { dockerfile: 'Dockerfile' });
    expect(s3.hashed).toBe(1);
    expect(s3.manifest.entries.find((e) => e.path === 'src/f7')).toMatchObject({ digest: sha('changed, same mtime') });
  });

  it('hashes again a file modified after the previous scan started (racily clean), even with the same stamp', async () => {
    const dir = tree({ Dockerfile: 'x' });
    const future = Date.now() / 1000 + 3600;
    utimesSync(path.join(dir, 'Dockerfile'), future, future);
    const first = await StatCache.open(cacheDir, dir);
    await scanContext(dir, first, { dockerfile: 'Dockerfile' });
    await first.save(dir);
    const second = await StatCache.open(cacheDir, dir);
    expect((await scanContext(dir, second, { dockerfile: 'Dockerfile' })).hashed).toBe(1);
  });

  it('leaves out what .dockerignore excludes, but always sends the Dockerfile and .dockerignore', async () => {
    const dir = tree({
      'docker/app.Dockerfile': 'FROM scratch\n',
      '.dockerignore': 'docker\nnode_modules\n*.log\n.dockerignore\n',
      'node_modules/x/index.js': 'x',
      'keep.txt': 'k',
      'debug.log': 'l',
      'docker/other': 'o',
    });
    const scan = await scanContext(dir, await StatCache.open(null, dir), { dockerfile: 'docker/app.Dockerfile' });
    expect(scan.manifest.entries.map((e) => e.path)).toEqual(['.', '.dockerignore', 'docker', 'docker/app.Dockerfile', 'keep.txt']);
  });

  it('walks an ignored directory when an exception may let a file back in', async () => {
    const dir = tree({ Dockerfile: 'x', '.dockerignore': 'vendor\n!vendor/keep.go\n', 'vendor/keep.go': 'k', 'vendor/drop.go': 'd' });
    const scan = await scanContext(dir, await StatCache.open(null, dir), { dockerfile: 'Dockerfile' });
    expect(scan.manifest.entries.map((e) => e.path)).toEqual(['.', '.dockerignore', 'Dockerfile', 'vendor', 'vendor/keep.go']);
  });
});

describe('the walk record (docs/adr/0037)', () => {
  let cacheDir: string;
  beforeEach(() => {
    cacheDir = mkdtempSync(path.join(tmpdir(), 'strata-statcache-'));
  });

  /** One build's scan as the CLI does it: the walk, then (when the walk is not known) the manifest, remembered and saved. */
  async function scanOnce(dir: string): Promise<{ known: string | null; digest: string }> {
    const cache = await StatCache.open(cacheDir, dir);
    const walked = walkContext(dir, { dockerfile: 'Dockerfile' });
    const known = cache.knownWalk(walked.key);
    const scan = await scanContext(dir, cache, { dockerfile: 'Dockerfile' }, walked);
    const digest = sha(JSON.stringify(scan.manifest));
    cache.rememberWalk({ key: walked.key, digest, files: scan.files, bytes: scan.bytes }, walked.newestFileMtimeNs);
    await cache.save(dir);
    return { known: known?.digest ?? null, digest };
  }

  it('knows the manifest digest of an unchanged tree, and not after a file, a mode, a symlink or the .dockerignore changed', async () => {
    const dir = tree({ Dockerfile: 'FROM scratch\n', 'a/b.txt': 'b', 'a/c.txt': 'c' });
    symlinkSync('b.txt', path.join(dir, 'a/link'));
    const first = await scanOnce(dir);
    expect(first.known).toBeNull();
    const second = await scanOnce(dir);
    expect(second.known).toBe(first.digest);
    expect(second.digest).toBe(first.digest);

    // Same size and mtime, other bytes: the ctime moved, so the walk is not known, and the manifest says the new content.
    writeFileSync(path.join(dir, 'a/b.txt'), 'B');
    utimesSync(path.join(dir, 'a/b.txt'), OLD, OLD);
    const third = await scanOnce(dir);
    expect(third.known).toBeNull();
    expect(third.digest).not.toBe(first.digest);
    expect((await scanOnce(dir)).known).toBe(third.digest);

    chmodSync(path.join(dir, 'a/c.txt'), 0o600);
    expect((await scanOnce(dir)).known).toBeNull();

    unlinkSync(path.join(dir, 'a/link'));
    symlinkSync('c.txt', path.join(dir, 'a/link'));
    expect((await scanOnce(dir)).known).toBeNull();

    writeFileSync(path.join(dir, '.dockerignore'), 'a/c.txt\n');
    utimesSync(path.join(dir, '.dockerignore'), OLD, OLD);
    const ignored = await scanOnce(dir);
    expect(ignored.known).toBeNull();
    expect((await scanOnce(dir)).known).toBe(ignored.digest);
  });

  it('remembers no walk while a file is racily clean (modified after the scan started)', async () => {
    const dir = tree({ Dockerfile: 'x', 'f.txt': 'one' });
    const future = Date.now() / 1000 + 3600;
    utimesSync(path.join(dir, 'f.txt'), future, future);
    await scanOnce(dir);
    expect((await scanOnce(dir)).known).toBeNull();
    utimesSync(path.join(dir, 'f.txt'), OLD, OLD);
    const settled = await scanOnce(dir);
    expect(settled.known).toBeNull();
    expect((await scanOnce(dir)).known).toBe(settled.digest);
  });
});

describe('hashing a cold context in hash threads', () => {
  const shaOf = (b: Buffer) => createHash('sha256').update(b).digest('hex');

  it('gives the sha256 of every file, in threads as in the main thread, for empty, small and multi-buffer files', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'strata-hash-'));
    const contents: Buffer[] = [];
    // 300 files (more than the main thread takes) of sizes around the read buffer, a big one among them.
    for (let i = 0; i < 300; i++) {
      const size = i === 0 ? 0 : i === 1 ? 3 * 1024 * 1024 + 17 : i === 2 ? 1024 * 1024 : (i * 7919) % 40_000;
      contents.push(Buffer.from(Array.from({ length: size }, (_, k) => (k * 31 + i) & 0xff)));
    }
    const jobs = contents.map((c, i) => {
      const abs = path.join(dir, `f${i}`);
      writeFileSync(abs, c);
      const st = lstatSync(abs, { bigint: true });
      return { abs, size: c.length, mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs) };
    });
    const expected = contents.map((c) => [shaOf(c), true]);
    expect(await hashFiles(jobs, 4)).toEqual(expected);
    expect(await hashFiles(jobs, 0)).toEqual(expected);
    // A scan of that tree in threads makes the same manifest as one in the main thread.
    writeFileSync(path.join(dir, 'Dockerfile'), 'FROM scratch\n');
    const threaded = await scanContext(dir, await StatCache.open(null, dir), { dockerfile: 'Dockerfile', threads: 4 });
    const inline = await scanContext(dir, await StatCache.open(null, dir), { dockerfile: 'Dockerfile', threads: 0 });
    expect(threaded.manifest).toEqual(inline.manifest);
    expect(threaded.manifest.entries.find((e) => e.path === 'f1')).toMatchObject({ digest: `sha256:${shaOf(contents[1])}` });
  });

  it('fails the scan naming a file that went away between the walk and its hashing', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'strata-hash-'));
    const jobs = Array.from({ length: 300 }, (_, i) => {
      const abs = path.join(dir, `f${i}`);
      writeFileSync(abs, `c${i}`);
      return { abs, size: String(`c${i}`).length, mtimeNs: '0', ctimeNs: '0' };
    });
    unlinkSync(jobs[250].abs);
    await expect(hashFiles(jobs, 2)).rejects.toMatchObject({ code: 'ENOENT', message: expect.stringContaining('f250') });
  });

  it('hashes a file changed after its walk as it reads it, and does not remember it in the stat cache', async () => {
    for (const threads of [0, 4]) {
      const cacheDir = mkdtempSync(path.join(tmpdir(), 'strata-statcache-'));
      const files: Record<string, string> = { Dockerfile: 'FROM scratch\n' };
      for (let i = 0; i < 300; i++) files[`src/f${i}`] = `content ${i}`;
      const dir = tree(files);
      const walked = walkContext(dir, { dockerfile: 'Dockerfile' });
      // Changed after the walk, before its contents are read (as during a long cold scan).
      writeFileSync(path.join(dir, 'src/f7'), 'changed meanwhile');
      utimesSync(path.join(dir, 'src/f7'), OLD, OLD);
      const cache = await StatCache.open(cacheDir, dir);
      const scan = await scanContext(dir, cache, { dockerfile: 'Dockerfile', threads }, walked);
      await cache.save(dir);
      expect(scan.manifest.entries.find((e) => e.path === 'src/f7')).toMatchObject({ digest: sha('changed meanwhile') });
      // The next scan hashes that file again (and only that one): its row was not kept.
      const next = await scanContext(dir, await StatCache.open(cacheDir, dir), { dockerfile: 'Dockerfile', threads });
      expect(next.hashed).toBe(1);
      expect(next.manifest.entries.find((e) => e.path === 'src/f7')).toMatchObject({ digest: sha('changed meanwhile'), size: 17 });
    }
  });
});
