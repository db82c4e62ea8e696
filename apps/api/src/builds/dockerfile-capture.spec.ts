import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { gzipSync } from 'node:zlib';
import { type ContextManifest, encodeTarHeader, tarEndOfArchive, tarPadding } from '@strata/oci';
import { CAPTURED_DOCKERFILE_MAX_BYTES, captureDockerfile, dockerfileText, manifestDockerfile, streamingDockerfileCapture } from './dockerfile-capture.js';

const file = (name: string, content: string | Buffer): Buffer => {
  const body = Buffer.from(content);
  return Buffer.concat([encodeTarHeader({ name, type: 'file', mode: 0o644, uid: 0, gid: 0, size: body.length, mtime: 0 }), body, tarPadding(body.length)]);
};
const dir = (name: string) => encodeTarHeader({ name: `${name}/`, type: 'directory', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 0 });
const symlink = (name: string, target: string) => encodeTarHeader({ name, type: 'symlink', linkname: target, mode: 0o777, uid: 0, gid: 0, size: 0, mtime: 0 });
const tar = (...entries: Buffer[]) => Buffer.concat([...entries, tarEndOfArchive()]);

describe('captureDockerfile: the Dockerfile of a small tar context, read at upload as the worker will read it', () => {
  it('finds it wherever it lies in a tar or a tar.gz, under ./ names too', async () => {
    const context = tar(dir('.'), file('./src/a.txt', 'a'), file('./Dockerfile', 'FROM scratch\nCOPY src /src\n'), dir('./docker'), file('./docker/app.Dockerfile', 'FROM busybox\n'));
    expect(await captureDockerfile(context, 'Dockerfile')).toBe('FROM scratch\nCOPY src /src\n');
    expect(await captureDockerfile(gzipSync(context), 'docker/app.Dockerfile')).toBe('FROM busybox\n');
    expect(await captureDockerfile(context, './docker//app.Dockerfile')).toBe('FROM busybox\n');
  });

  it('takes the last entry of the name, as the context index does', async () => {
    expect(await captureDockerfile(tar(file('Dockerfile', 'FROM one\n'), file('Dockerfile', 'FROM two\n')), 'Dockerfile')).toBe('FROM two\n');
    expect(await captureDockerfile(tar(file('Dockerfile', 'FROM one\n'), symlink('Dockerfile', 'other')), 'Dockerfile')).toBeNull();
  });

  it('leaves to the worker what it must resolve or refuse: links, a linked parent, none there, too large, NUL bytes, a broken archive', async () => {
    expect(await captureDockerfile(tar(file('real', 'FROM scratch\n'), symlink('Dockerfile', 'real')), 'Dockerfile')).toBeNull();
    expect(await captureDockerfile(tar(symlink('docker', 'ci'), dir('ci'), file('ci/Dockerfile', 'FROM scratch\n'), file('docker/Dockerfile', 'FROM scratch\n')), 'docker/Dockerfile')).toBeNull();
    expect(await captureDockerfile(tar(file('a', 'a')), 'Dockerfile')).toBeNull();
    expect(await captureDockerfile(tar(file('Dockerfile', `FROM scratch\n${'#'.repeat(CAPTURED_DOCKERFILE_MAX_BYTES)}\n`)), 'Dockerfile')).toBeNull();
    expect(await captureDockerfile(tar(file('Dockerfile', Buffer.from([0x46, 0x00, 0x52]))), 'Dockerfile')).toBeNull();
    const cut = tar(file('Dockerfile', 'FROM scratch\n'), file('big', 'x'.repeat(4096)));
    expect(await captureDockerfile(cut.subarray(0, 1024 + 100), 'Dockerfile')).toBeNull();
    expect(await captureDockerfile(Buffer.from('not a tar at all'), 'Dockerfile')).toBeNull();
  });
});

describe('manifestDockerfile: which content of a context manifest the worker will read as its Dockerfile', () => {
  const d = (c: string) => `sha256:${c.repeat(64)}`;
  const manifest = (entries: ContextManifest['entries']) => ({ entries }) as ContextManifest;

  it('names a regular file at the path (./ and doubled slashes as the worker cleans them), and nothing else', () => {
    const m = manifest([
      { path: 'Dockerfile', type: 'file', mode: 0o644, mtime: 0, size: 20, digest: d('a') },
      { path: 'ci', type: 'symlink', mtime: 0, target: 'docker' },
      { path: 'docker', type: 'dir', mode: 0o755, mtime: 0 },
      { path: 'docker/app.Dockerfile', type: 'file', mode: 0o644, mtime: 0, size: 30, digest: d('b') },
      { path: 'docker/big.Dockerfile', type: 'file', mode: 0o644, mtime: 0, size: CAPTURED_DOCKERFILE_MAX_BYTES + 1, digest: d('c') },
      { path: 'link.Dockerfile', type: 'symlink', mtime: 0, target: 'Dockerfile' },
    ]);
    expect(manifestDockerfile(m, 'Dockerfile')).toEqual({ digest: d('a'), size: 20 });
    expect(manifestDockerfile(m, './docker//app.Dockerfile')).toEqual({ digest: d('b'), size: 30 });
    expect(manifestDockerfile(m, 'docker/big.Dockerfile')).toBeNull();
    expect(manifestDockerfile(m, 'link.Dockerfile')).toBeNull();
    expect(manifestDockerfile(m, 'ci/app.Dockerfile')).toBeNull();
    expect(manifestDockerfile(m, 'none')).toBeNull();
  });

  it('keeps a Dockerfile with a NUL byte out of the row (Postgres text holds none)', () => {
    expect(dockerfileText(Buffer.from('FROM scratch\n'))).toBe('FROM scratch\n');
    expect(dockerfileText(Buffer.from([0x46, 0x00]))).toBeNull();
  });
});

describe('streamingDockerfileCapture: the Dockerfile of a large plain tar, read beside its upload', () => {
  /** Sends `context` through the tap in `size`-byte chunks, as a request would; answers what came out and the capture. */
  async function stream(context: Buffer, wanted: string, size = 1000) {
    const { tap, dockerfile } = streamingDockerfileCapture(wanted, 64 * 1024 * 1024);
    const chunks = Array.from({ length: Math.ceil(context.length / size) }, (_, i) => context.subarray(i * size, (i + 1) * size));
    const out: Buffer[] = [];
    await pipeline(Readable.from(chunks), tap, async (source: AsyncIterable<Buffer>) => {
      for await (const c of source) out.push(c);
    });
    return { passed: Buffer.concat(out), dockerfile: await dockerfile };
  }

  it('passes every byte on unchanged and finds the Dockerfile, the last entry of its name', async () => {
    const big = Buffer.alloc(3 * 1024 * 1024, 7);
    const context = tar(file('Dockerfile', 'FROM one\n'), file('data.bin', big), file('./Dockerfile', 'FROM scratch\nCOPY data.bin /\n'));
    const { passed, dockerfile } = await stream(context, 'Dockerfile', 64 * 1024);
    expect(passed.equals(context)).toBe(true);
    expect(dockerfile).toBe('FROM scratch\nCOPY data.bin /\n');
  });

  it('never holds the upload back once it has its answer early: a linked parent, or a stream that is no tar', async () => {
    const after = Buffer.alloc(8 * 1024 * 1024, 1);
    const linked = tar(symlink('docker', 'ci'), file('docker/Dockerfile', 'FROM scratch\n'), file('after.bin', after));
    const one = await stream(linked, 'docker/Dockerfile', 16 * 1024);
    expect(one.passed.equals(linked)).toBe(true);
    expect(one.dockerfile).toBeNull();
    const junk = Buffer.concat([Buffer.from('not a tar at all'), after]);
    const two = await stream(junk, 'Dockerfile', 16 * 1024);
    expect(two.passed.equals(junk)).toBe(true);
    expect(two.dockerfile).toBeNull();
  });
});
