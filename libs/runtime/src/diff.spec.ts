import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, linkSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lsetxattr } from '@strata/native';
import { LayerWriter, type LayerEntry } from '@strata/oci';
import { readRawTar } from '../../../test/support/raw-tar.js';
import { diffUpperDir } from './diff.js';

// An upper dir as a RUN step could leave it, made without root: no devices, whiteouts or trusted.* xattrs
// (test/run-diff.e2e.spec.ts covers those with a real container).
describe('diffUpperDir on what a step leaves', () => {
  let upper: string;
  let socketServer: Server;
  const latin1Name = Buffer.from([0x63, 0x61, 0x66, 0xe9]); // "café" in latin1: not UTF-8
  const longName = `${'d'.repeat(120)}/${'f'.repeat(200)}`;

  beforeAll(async () => {
    upper = mkdtempSync(join(tmpdir(), 'strata-diff-'));
    symlinkSync('/nonexistent', join(upper, 'dangling'));
    symlinkSync('/etc/passwd', join(upper, 'absolute'));
    execFileSync('mkfifo', ['-m', '0640', join(upper, 'fifo')]);
    socketServer = createServer();
    await new Promise<void>((resolve) => socketServer.listen(join(upper, 'app.sock'), resolve));
    writeFileSync(join(upper, 'data'), 'linked\n');
    linkSync(join(upper, 'data'), join(upper, 'data-2'));
    symlinkSync('data', join(upper, 'alias'));
    linkSync(join(upper, 'alias'), join(upper, 'alias-2'));
    writeFileSync(join(upper, 'setuid'), '#!/bin/sh\n');
    chmodSync(join(upper, 'setuid'), 0o4755);
    mkdirSync(join(upper, 'shared'));
    chmodSync(join(upper, 'shared'), 0o3777);
    writeFileSync(join(upper, 'with space'), 's');
    writeFileSync(join(upper, 'new\nline'), 'n');
    writeFileSync(Buffer.concat([Buffer.from(`${upper}/`), latin1Name]), 'l');
    symlinkSync(Buffer.concat([Buffer.from('./'), latin1Name]), join(upper, 'to-latin1'));
    mkdirSync(join(upper, 'd'.repeat(120)));
    writeFileSync(join(upper, longName), 'long');
    writeFileSync(join(upper, 'tagged'), 't');
    execFileSync('setfattr', ['-n', 'user.origin', '-v', '0x00ff10', join(upper, 'tagged')]);
    // Names a tool's text output has to escape: not UTF-8, a newline, a backslash.
    lsetxattr(Buffer.concat([Buffer.from(`${upper}/`), latin1Name]), 'user.bytes', Buffer.from([0xff, 0x00, 0x0a]));
    lsetxattr(join(upper, 'new\nline'), 'user.nl', Buffer.from('a\nb'));
    writeFileSync(join(upper, 'back\\slash'), 'b');
    lsetxattr(join(upper, 'back\\slash'), 'user.empty', Buffer.alloc(0));
  });
  afterAll(() => {
    socketServer.close();
    rmSync(upper, { recursive: true, force: true });
  });

  const describeEntry = (e: LayerEntry): string => {
    const target = 'target' in e ? ` -> ${e.target}` : '';
    const mode = e.mode === undefined ? '' : ` ${e.mode.toString(8)}`;
    return `${e.type} ${JSON.stringify(e.path)}${mode}${target}`;
  };

  it('turns every kind of name into an entry, leaving sockets out, and links names sharing an inode', async () => {
    const entries = await diffUpperDir(upper);
    const byName = new Map(entries.map((e) => [e.path, e]));
    expect(describeEntry(byName.get('dangling')!)).toBe('symlink "dangling" 777 -> /nonexistent');
    expect(describeEntry(byName.get('absolute')!)).toBe('symlink "absolute" 777 -> /etc/passwd');
    expect(describeEntry(byName.get('fifo')!)).toBe('fifo "fifo" 640');
    expect(byName.has('app.sock')).toBe(false);
    // Gone from the upper dir too: a worker keeps that dir as its copy of the layer.
    expect(existsSync(join(upper, 'app.sock'))).toBe(false);
    expect(describeEntry(byName.get('data')!)).toBe('file "data" 644');
    expect(byName.get('data-2')).toEqual({ type: 'hardlink', path: 'data-2', target: 'data' });
    expect(describeEntry(byName.get('alias')!)).toBe('symlink "alias" 777 -> data');
    expect(byName.get('alias-2')).toEqual({ type: 'hardlink', path: 'alias-2', target: 'alias' });
    expect(byName.get('setuid')!.mode).toBe(0o4755);
    expect(byName.get('shared')!.mode).toBe(0o3777);
    expect(byName.get('new\nline')!.type).toBe('file');
    expect(byName.get('with space')!.type).toBe('file');
    expect(byName.get(longName)!.type).toBe('file');
    const latin1 = entries.find((e) => e.pathBytes?.equals(latin1Name));
    expect(latin1?.type).toBe('file');
    const toLatin1 = byName.get('to-latin1') as LayerEntry & { type: 'symlink' };
    expect(toLatin1.targetBytes).toEqual(Buffer.concat([Buffer.from('./'), latin1Name]));
    expect(byName.get('tagged')!.xattrs).toEqual({ 'user.origin': Buffer.from([0x00, 0xff, 0x10]) });
    expect(latin1?.xattrs).toEqual({ 'user.bytes': Buffer.from([0xff, 0x00, 0x0a]) });
    expect(byName.get('new\nline')!.xattrs).toEqual({ 'user.nl': Buffer.from('a\nb') });
    expect(byName.get('back\\slash')!.xattrs).toEqual({ 'user.empty': Buffer.alloc(0) });
    expect(byName.get('data')!.xattrs).toBeUndefined();
  });

  it('packs them into a layer with each name, target, mode and xattr byte for byte', async () => {
    const packed = new LayerWriter({ compression: 'none' }).pack(await diffUpperDir(upper));
    const chunks: Buffer[] = [];
    for await (const chunk of packed.stream) chunks.push(chunk as Buffer);
    const tar = readRawTar(Buffer.concat(chunks));
    const byName = new Map(tar.map((e) => [e.name.toString('latin1'), e]));
    const at = (name: string | Buffer) => byName.get(typeof name === 'string' ? Buffer.from(name).toString('latin1') : name.toString('latin1'));

    expect(at('dangling')).toMatchObject({ typeflag: '2', linkname: Buffer.from('/nonexistent') });
    expect(at('absolute')).toMatchObject({ typeflag: '2', linkname: Buffer.from('/etc/passwd') });
    expect(at('fifo')).toMatchObject({ typeflag: '6', mode: 0o640 });
    expect(at('app.sock')).toBeUndefined();
    expect(at('data')).toMatchObject({ typeflag: '0', content: Buffer.from('linked\n') });
    expect(at('data-2')).toMatchObject({ typeflag: '1', linkname: Buffer.from('data') });
    expect(at('alias')).toMatchObject({ typeflag: '2', linkname: Buffer.from('data') });
    expect(at('alias-2')).toMatchObject({ typeflag: '1', linkname: Buffer.from('alias') });
    expect(at('setuid')!.mode).toBe(0o4755);
    expect(at('shared/')!.mode).toBe(0o3777);
    expect(at('new\nline')!.content.toString()).toBe('n');
    expect(at('with space')!.content.toString()).toBe('s');
    // Over 100 bytes and no ustar split possible: a PAX path record carries it.
    expect(at(longName)!.pax.get('path')).toEqual(Buffer.from(longName));
    expect(at(latin1Name)!.pax.get('path')).toEqual(latin1Name);
    expect(at('to-latin1')!.linkname).toEqual(Buffer.concat([Buffer.from('./'), latin1Name]));
    expect(at('tagged')!.pax.get('SCHILY.xattr.user.origin')).toEqual(Buffer.from([0x00, 0xff, 0x10]));
  });
});
