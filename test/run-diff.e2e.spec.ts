import { jest } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { importBusybox } from './support/images.js';
import { readRawTar, type RawTarEntry } from './support/raw-tar.js';
import { build, makeDir, type Stack, startStack, tarOf } from './support/stack.js';

jest.setTimeout(120_000);

// security.capability v2, effective, permitted cap_net_raw (13) and cap_setfcap (31): a byte >= 0x80 on purpose.
const CAPABILITY = '0100000200200080000000000000000000000000';
const LONG_DIR = 'd'.repeat(120);
const LONG_FILE = 'f'.repeat(200);

/** The layers of an image from its oci-archive, each as its tar entries. */
function layersOf(archive: Buffer): RawTarEntry[][] {
  const work = mkdtempSync(path.join(tmpdir(), 'strata-run-diff-'));
  writeFileSync(path.join(work, 'image.tar'), archive);
  execFileSync('tar', ['-xf', path.join(work, 'image.tar'), '-C', work]);
  const blob = (digest: string) => readFileSync(path.join(work, 'blobs', ...digest.split(':')));
  const index = JSON.parse(readFileSync(path.join(work, 'index.json'), 'utf8'));
  const manifest = JSON.parse(blob(index.manifests[0].digest).toString());
  return manifest.layers.map((layer: { digest: string }) => readRawTar(gunzipSync(blob(layer.digest))));
}

describe('a RUN step that leaves every kind of file', () => {
  let stack: Stack;
  let token: string;

  beforeAll(async () => {
    stack = await startStack();
    ({ token } = await stack.tenant('run-diff'));
    await importBusybox(stack, token);
  });
  afterAll(async () => {
    await stack.close();
  });

  it('makes a layer that holds each exactly as left, and the next RUN sees them', async () => {
    const context = makeDir({
      Dockerfile: [
        'FROM busybox:1',
        'RUN mkdir /t && echo 1 > /t/gone-1 && echo 2 > /t/gone-2',
        [
          'RUN --mount=type=bind,source=fsmake,target=/fsmake set -e; cd /t; rm gone-1 gone-2;',
          'ln -s /nonexistent dangling; ln -s /etc/passwd absolute; /fsmake socket /t/app.sock; mkfifo -m 640 fifo;',
          'mknod null c 1 3; mknod loop9 b 7 9; echo data > data; ln data data-2;',
          `touch cap; /fsmake setxattr /t/cap security.capability ${CAPABILITY}; /fsmake setxattr /t/cap user.note 00ff;`,
          'touch zero; chmod 000 zero; mkdir zerodir; chmod 000 zerodir; touch suid; chmod 4755 suid;',
          'mkdir sgid; chmod 2755 sgid; mkdir sticky; chmod 1777 sticky;',
          `touch "with space" "$(printf 'new\\nline')" "$(printf 'caf\\351')"; mkdir ${LONG_DIR}; echo long > ${LONG_DIR}/${LONG_FILE}`,
        ].join(' '),
        [
          'RUN --mount=type=bind,source=fsmake,target=/fsmake cd /t &&',
          'for f in dangling absolute fifo null loop9 data-2 zero zerodir suid sgid sticky; do stat -c "%n %F %a %t,%T %h" $f; done > /seen;',
          'readlink dangling >> /seen; readlink absolute >> /seen; test -e app.sock || echo no-socket >> /seen;',
          '/fsmake getxattr /t/cap security.capability >> /seen; /fsmake getxattr /t/cap user.note >> /seen;',
          `test -f "$(printf 'caf\\351')" && test -f "$(printf 'new\\nline')" && test -f "with space" && cat ${LONG_DIR}/${LONG_FILE} >> /seen;`,
          'test -e gone-1 || echo gone >> /seen',
        ].join(' '),
        '',
      ].join('\n'),
    });
    execFileSync('gcc', ['-static', '-O2', '-o', path.join(context, 'fsmake'), path.join(import.meta.dirname, 'support/fsmake.c')]);

    const result = await build(stack, token, 'repository=run-diff&tag=1', tarOf(context));
    expect(result.error).toBeNull();
    expect(result.status).toBe('succeeded');

    const res = await fetch(`${stack.url}/v1/repositories/run-diff/tags/1/oci-archive`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    const archive = Buffer.from(await res.arrayBuffer());
    const layers = layersOf(archive);
    const byName = new Map(layers[2]!.map((e) => [e.name.toString('latin1'), e]));
    const at = (name: string) => byName.get(Buffer.from(name).toString('latin1'));
    const shape = (name: string) => {
      const e = at(name);
      return e && { type: e.typeflag, mode: e.mode.toString(8), link: e.linkname.toString('latin1'), dev: `${e.devmajor},${e.devminor}` };
    };

    expect(shape('t/dangling')).toEqual({ type: '2', mode: '777', link: '/nonexistent', dev: '0,0' });
    expect(shape('t/absolute')).toEqual({ type: '2', mode: '777', link: '/etc/passwd', dev: '0,0' });
    expect(at('t/app.sock')).toBeUndefined();
    expect(shape('t/fifo')).toEqual({ type: '6', mode: '640', link: '', dev: '0,0' });
    expect(shape('t/null')).toMatchObject({ type: '3', dev: '1,3' });
    expect(shape('t/loop9')).toMatchObject({ type: '4', dev: '7,9' });
    expect(shape('t/data')).toMatchObject({ type: '0' });
    expect(shape('t/data-2')).toEqual({ type: '1', mode: '644', link: 't/data', dev: '0,0' });
    // Two deleted files: two whiteouts, not one whiteout and a hard link to it.
    expect([at('t/.wh.gone-1')?.typeflag, at('t/.wh.gone-2')?.typeflag]).toEqual(['0', '0']);
    expect(at('t/cap')!.pax.get('SCHILY.xattr.security.capability')?.toString('hex')).toBe(CAPABILITY);
    expect(at('t/cap')!.pax.get('SCHILY.xattr.user.note')?.toString('hex')).toBe('00ff');
    expect([...byName.values()].flatMap((e) => [...e.pax.keys()]).filter((k) => k.includes('trusted.'))).toEqual([]);
    expect(shape('t/zero')).toMatchObject({ type: '0', mode: '0' });
    expect(shape('t/zerodir/')).toMatchObject({ type: '5', mode: '0' });
    expect(shape('t/suid')!.mode).toBe('4755');
    expect(shape('t/sgid/')!.mode).toBe('2755');
    expect(shape('t/sticky/')!.mode).toBe('1777');
    expect(shape('t/with space')!.type).toBe('0');
    expect(shape('t/new\nline')!.type).toBe('0');
    expect(byName.get(Buffer.from('t/caf\xe9', 'latin1').toString('latin1'))?.pax.get('path')).toEqual(Buffer.from('t/caf\xe9', 'latin1'));
    expect(at(`t/${LONG_DIR}/${LONG_FILE}`)!.content.toString()).toBe('long\n');

    // What the next RUN saw, on the worker's own copy of the layer.
    const seenEntry = layers[3]!.find((e) => e.name.toString() === 'seen');
    expect(seenEntry!.content.toString().split('\n')).toEqual([
      'dangling symbolic link 777 0,0 1',
      'absolute symbolic link 777 0,0 1',
      'fifo fifo 640 0,0 1',
      'null character special file 644 1,3 1',
      'loop9 block special file 644 7,9 1',
      'data-2 regular file 644 0,0 2',
      'zero regular empty file 0 0,0 1',
      'zerodir directory 0 0,0 2',
      'suid regular empty file 4755 0,0 1',
      'sgid directory 2755 0,0 2',
      'sticky directory 1777 0,0 2',
      '/nonexistent',
      '/etc/passwd',
      'no-socket',
      CAPABILITY,
      '00ff',
      'long',
      'gone',
      '',
    ]);

    // And umoci, a reader of OCI images that is not ours, unpacks the same tree.
    const work = mkdtempSync(path.join(tmpdir(), 'strata-run-diff-umoci-'));
    writeFileSync(path.join(work, 'image.tar'), archive);
    mkdirSync(path.join(work, 'layout'));
    execFileSync('tar', ['-xf', path.join(work, 'image.tar'), '-C', path.join(work, 'layout')]);
    execFileSync('umoci', ['unpack', '--image', `${path.join(work, 'layout')}:1`, path.join(work, 'bundle')], { stdio: 'pipe' });
    const t = path.join(work, 'bundle/rootfs/t');
    expect(lstatSync(path.join(t, 'dangling')).isSymbolicLink()).toBe(true);
    expect(lstatSync(path.join(t, 'fifo')).isFIFO()).toBe(true);
    expect(lstatSync(path.join(t, 'null')).isCharacterDevice()).toBe(true);
    expect(lstatSync(path.join(t, 'data-2')).ino).toBe(lstatSync(path.join(t, 'data')).ino);
    expect(existsSync(path.join(t, 'gone-1'))).toBe(false);
    expect(readdirSync(t, { encoding: 'buffer' }).some((name) => name.equals(Buffer.from('caf\xe9', 'latin1')))).toBe(true);
    expect(execFileSync('getfattr', ['-h', '--only-values', '-n', 'security.capability', path.join(t, 'cap')]).toString('hex')).toBe(CAPABILITY);
  });
});
