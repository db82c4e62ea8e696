import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { encodeTarHeader, tarEndOfArchive, tarPadding } from '@strata/oci';

/**
 * Bad input, made by code: what a broken CI job, a fuzzer or an attacker sends Strata. Every case
 * says what the sender must see: a 4xx with a message that matches, or a build that fails with a
 * message that matches. Nothing here may answer 500, fail a build as "internal error", or leave a
 * build queued or running.
 */
export type Expected = { status: number; message: RegExp } | { build: 'failed'; message: RegExp };

export interface ContextCase {
  name: string;
  body: Buffer;
  contentType?: string;
  query?: string;
  expect: Expected;
}

/** One regular file entry (header, content, padding). */
export function fileEntry(name: string, content: Buffer | string, mode = 0o644): Buffer {
  const data = Buffer.isBuffer(content) ? content : Buffer.from(content);
  return Buffer.concat([encodeTarHeader({ name, type: 'file', mode, uid: 0, gid: 0, size: data.length, mtime: 0 }), data, tarPadding(data.length)]);
}

export function tarOfEntries(...entries: Buffer[]): Buffer {
  return Buffer.concat([...entries, tarEndOfArchive()]);
}

const DOCKERFILE = 'FROM scratch\nCOPY a /a\n';
export const goodTar = () => tarOfEntries(fileEntry('Dockerfile', DOCKERFILE), fileEntry('a', 'a\n'));

/** A ustar header block as written by hand: any size field, and the checksum made to match. */
function rawHeader(name: string, sizeField: string, typeflag = '0'): Buffer {
  const block = Buffer.alloc(512);
  block.write(name, 0, 100, 'latin1');
  block.write('0000644\0', 100, 8, 'ascii');
  block.write('0000000\0', 108, 8, 'ascii');
  block.write('0000000\0', 116, 8, 'ascii');
  block.write(sizeField, 124, 12, 'ascii');
  block.write('00000000000\0', 136, 12, 'ascii');
  block.fill(0x20, 148, 156);
  block.write(typeflag, 156, 1, 'ascii');
  block.write('ustar\u000000', 257, 8, 'ascii');
  let sum = 0;
  for (const b of block) sum += b;
  block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'ascii');
  return block;
}

/** A PAX extended header ('x') whose records apply to the next entry. */
function paxHeader(records: Record<string, string>): Buffer {
  const body = Buffer.concat(
    Object.entries(records).map(([k, v]) => {
      const rest = ` ${k}=${v}\n`;
      let len = Buffer.byteLength(rest) + 1;
      while (String(len).length + Buffer.byteLength(rest) !== len) len = String(len).length + Buffer.byteLength(rest);
      return Buffer.from(`${len}${rest}`);
    }),
  );
  return Buffer.concat([rawHeader('PaxHeaders/x', `${body.length.toString(8).padStart(11, '0')}\0`, 'x'), body, tarPadding(body.length)]);
}

/** `limitBytes`: the stack's STRATA_MAX_CONTEXT_BYTES; `maxEntries`: its STRATA_MAX_CONTEXT_ENTRIES. */
export function contextCases(limitBytes: number, maxEntries: number): ContextCase[] {
  const tar = goodTar();
  const secondHeaderCorrupt = Buffer.from(tar);
  secondHeaderCorrupt[1024 + 148] = '7'.charCodeAt(0); // the checksum of the entry after Dockerfile
  const bomb = gzipSync(tarOfEntries(fileEntry('Dockerfile', DOCKERFILE), fileEntry('zeros', Buffer.alloc(limitBytes * 4))));
  const manyEntries = tarOfEntries(fileEntry('Dockerfile', DOCKERFILE), ...Array.from({ length: maxEntries + 5 }, (_, i) => fileEntry(`f/${i}`, '')));
  const notTar = { status: 400, message: /^The build context is not a valid tar archive: / };
  return [
    { name: 'text that is not an archive', body: Buffer.from('this is not a tar archive\n'.repeat(100)), expect: notTar },
    { name: 'a body shorter than one tar header', body: Buffer.from('hello'), expect: { status: 400, message: /ends after 5 bytes, before the end of the first 512-byte tar header/ } },
    { name: 'JSON sent as a tar', body: Buffer.from(JSON.stringify({ dockerfile: 'FROM scratch' }).padEnd(600, ' ')), expect: { status: 400, message: /checksum/ } },
    { name: 'a zstd archive', body: Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.alloc(600, 7)]), expect: { status: 415, message: /is a zstd archive: send a tar, or a tar compressed with gzip/ } },
    { name: 'a zip file', body: Buffer.concat([Buffer.from('PK\x03\x04', 'latin1'), Buffer.alloc(600, 1)]), expect: { status: 415, message: /is a zip archive/ } },
    { name: 'an xz archive', body: Buffer.concat([Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), Buffer.alloc(600, 1)]), expect: { status: 415, message: /is a xz archive/ } },
    { name: 'gzip of text', body: gzipSync(Buffer.from('not a tar, but gzipped\n'.repeat(100))), contentType: 'application/gzip', expect: notTar },
    { name: 'gzip magic followed by garbage', body: Buffer.concat([Buffer.from([0x1f, 0x8b]), Buffer.alloc(2000, 0x41)]), contentType: 'application/gzip', expect: { status: 400, message: /the gzip data is corrupt/ } },
    { name: 'a tar cut off in the middle of a file', body: tar.subarray(0, 512 + 10), expect: { build: 'failed', message: /^the build context is not a valid tar archive: it ends in the middle of an entry/ } },
    { name: 'a tar.gz cut off', body: gzipSync(tarOfEntries(fileEntry('Dockerfile', DOCKERFILE), fileEntry('big', randomBytes(64 * 1024)))).subarray(0, 300), contentType: 'application/gzip', expect: { build: 'failed', message: /^the build context is not a valid tar archive: the gzip stream ends early/ } },
    { name: 'a tar whose second header is corrupt', body: secondHeaderCorrupt, expect: { build: 'failed', message: /^the build context is not a valid tar archive: an entry header is corrupt/ } },
    { name: 'a gzip bomb', body: bomb, contentType: 'application/gzip', expect: { build: 'failed', message: /^the build context was refused: .*(exceeds|expands to more than)/ } },
    { name: 'a header claiming an 8 GiB file', body: Buffer.concat([fileEntry('Dockerfile', DOCKERFILE), rawHeader('huge', '77777777777\0'), Buffer.alloc(4096)]), expect: { build: 'failed', message: /^the build context (was refused: refusing tar entry "huge": archive content exceeds|is not a valid tar archive)/ } },
    { name: 'a PAX size of 10^18 bytes', body: Buffer.concat([fileEntry('Dockerfile', DOCKERFILE), paxHeader({ size: '1000000000000000000' }), rawHeader('pax-huge', '00000000000\0'), Buffer.alloc(1024)]), expect: { build: 'failed', message: /^the build context (was refused|is not a valid tar archive): / } },
    { name: 'a PAX path with a NUL byte', body: tarOfEntries(fileEntry('Dockerfile', DOCKERFILE), paxHeader({ path: 'a\0b' }), rawHeader('placeholder', '00000000000\0')), expect: { build: 'failed', message: /^the build context (was refused|is not a valid tar archive): / } },
    { name: 'a 1 MiB PAX path', body: tarOfEntries(fileEntry('Dockerfile', DOCKERFILE), paxHeader({ path: 'd/'.repeat(512 * 1024) + 'x' }), rawHeader('placeholder', '00000000000\0')), expect: { build: 'failed', message: /^the build context was refused: refusing tar entry "d\/d\/.*….*: path is longer than 4096 bytes/ } },
    { name: 'more entries than allowed', body: manyEntries, expect: { build: 'failed', message: new RegExp(`^the build context was refused: .*more than ${maxEntries} entries`) } },
    { name: 'a hard link to a file outside the archive', body: tarOfEntries(fileEntry('Dockerfile', DOCKERFILE), Buffer.concat([encodeTarHeader({ name: 'passwd', type: 'hardlink', linkname: '../../../etc/passwd', mode: 0o644, uid: 0, gid: 0, size: 0, mtime: 0 })])), expect: { build: 'failed', message: /^the build context was refused: refusing tar entry "passwd"/ } },
    { name: 'a Dockerfile that is a symlink out of the context', body: tarOfEntries(encodeTarHeader({ name: 'Dockerfile', type: 'symlink', linkname: '../../../../etc/passwd', mode: 0o777, uid: 0, gid: 0, size: 0, mtime: 0 })), expect: { build: 'failed', message: /^the build context was refused: refusing tar entry "Dockerfile"/ } },
  ];
}

export interface DockerfileCase {
  name: string;
  files: Record<string, Buffer | string>;
  /** The failed build's message; `line` when the failure names a Dockerfile line. */
  message: RegExp;
  line?: number | null;
}

export function dockerfileCases(): DockerfileCase[] {
  const nested = `FROM scratch\nARG A=x\nENV B=${'${A:-'.repeat(5000)}y${'}'.repeat(5000)}\nCOPY a /a\n`;
  return [
    { name: 'binary garbage', files: { Dockerfile: Buffer.from(Array.from({ length: 2048 }, (_, i) => (i * 37 + 11) % 256)), a: 'a' }, message: /Dockerfile/ },
    { name: 'a Dockerfile larger than 4 MiB', files: { Dockerfile: `FROM scratch\n${'LABEL a=b\n'.repeat(450_000)}`, a: 'a' }, message: /^Dockerfile is larger than 4 MiB$/, line: null },
    { name: 'only comments', files: { Dockerfile: '# nothing\n# here\n', a: 'a' }, message: /the Dockerfile has no instructions/ },
    { name: 'an unterminated heredoc', files: { Dockerfile: 'FROM scratch\nRUN <<EOF\necho never closed\n', a: 'a' }, message: /Dockerfile:2: .*heredoc/i, line: 2 },
    { name: 'a line continuation at the end of the file', files: { Dockerfile: 'FROM scratch\nCOPY a \\\n', a: 'a' }, message: /Dockerfile:2/, line: 2 },
    { name: 'a FROM name of 5000 characters', files: { Dockerfile: `FROM ${'a'.repeat(5000)}\nCOPY a /a\n`, a: 'a' }, message: /^Dockerfile:1: /, line: 1 },
    { name: 'COPY --from a stage that does not exist', files: { Dockerfile: 'FROM scratch\nCOPY --from=99 / /\n', a: 'a' }, message: /^Dockerfile:2: /, line: 2 },
    { name: 'RUN in an image with no shell', files: { Dockerfile: 'FROM scratch\nRUN echo hi\n', a: 'a' }, message: /^Dockerfile:2: /, line: 2 },
    { name: 'COPY --chown to a user that does not exist', files: { Dockerfile: 'FROM scratch\nCOPY --chown=nosuchuser a /a\n', a: 'a' }, message: /^Dockerfile:2: .*nosuchuser/, line: 2 },
    // Before the frontend rewrite merged on 2026-11-30 this failed at line 3; it now fails at line 1 saying the parser's stack overflowed.
    { name: '5000 nested variable defaults', files: { Dockerfile: nested, a: 'a' }, message: /^Dockerfile:\d+: / },
    { name: 'a Dockerfile path that is a directory', files: { 'Dockerfile/x': 'FROM scratch\n', a: 'a' }, message: /Dockerfile/ },
  ];
}
