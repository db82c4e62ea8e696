/** POSIX ustar header encoding with PAX extended headers for what ustar cannot hold. */

export const TAR_BLOCK_SIZE = 512;

export type TarEntryType =
  | 'file'
  | 'hardlink'
  | 'symlink'
  | 'char-device'
  | 'block-device'
  | 'directory'
  | 'fifo';

const TYPEFLAG: Record<TarEntryType, string> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  'char-device': '3',
  'block-device': '4',
  directory: '5',
  fifo: '6',
};

export interface TarHeaderFields {
  /** Archive path; directories end with '/'. Bytes when the name is not valid UTF-8 (written as they are). */
  name: string | Buffer;
  type: TarEntryType;
  /** Permission bits only (0o7777). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Seconds since the epoch (integer). */
  mtime: number;
  linkname?: string | Buffer;
  devmajor?: number;
  devminor?: number;
  /** Written as PAX `SCHILY.xattr.<name>` records, in sorted key order. */
  xattrs?: Readonly<Record<string, Buffer | string>>;
}

const MAX_OCTAL_7 = 0o7777777;
const MAX_OCTAL_11 = 0o77777777777;

function isAscii(value: string | Buffer): value is string {
  return typeof value === 'string' && /^[\x01-\x7f]*$/.test(value);
}

/** A name's bytes: a string as UTF-8, a Buffer as it is (a name that is not UTF-8 keeps its bytes, as Go's archive/tar does). */
function nameBytes(value: string | Buffer): Buffer {
  return typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
}

function writeString(block: Buffer, value: string, offset: number, length: number): void {
  block.write(value, offset, length, 'ascii');
}

function writeOctal(block: Buffer, value: number, offset: number, length: number): void {
  // length - 1 digits, zero padded, then NUL: the form GNU tar and Go's archive/tar write.
  block.write(value.toString(8).padStart(length - 1, '0'), offset, length - 1, 'ascii');
  block[offset + length - 1] = 0;
}

/** Splits a long ASCII name into ustar prefix/name at a '/', or null if it cannot fit. */
function splitUstarName(name: string): { prefix: string; name: string } | null {
  if (name.length <= 100) return { prefix: '', name };
  for (let i = name.indexOf('/'); i !== -1; i = name.indexOf('/', i + 1)) {
    const prefix = name.slice(0, i);
    const rest = name.slice(i + 1);
    if (prefix.length > 155) return null;
    if (rest.length > 0 && rest.length <= 100) return { prefix, name: rest };
  }
  return null;
}

function paxRecord(key: string, value: Buffer): Buffer {
  // The length prefix counts itself, so grow it until it is stable.
  const body = Buffer.concat([Buffer.from(` ${key}=`, 'utf8'), value, Buffer.from('\n')]);
  let length = body.length + 1;
  while (String(length).length + body.length !== length) length = String(length).length + body.length;
  return Buffer.concat([Buffer.from(String(length), 'ascii'), body]);
}

function padToBlock(size: number): number {
  const rest = size % TAR_BLOCK_SIZE;
  return rest === 0 ? 0 : TAR_BLOCK_SIZE - rest;
}

export function tarPadding(size: number): Buffer {
  return Buffer.alloc(padToBlock(size));
}

function ustarBlock(fields: {
  name: string;
  prefix: string;
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkname: string;
  devmajor: number;
  devminor: number;
}): Buffer {
  const block = Buffer.alloc(TAR_BLOCK_SIZE);
  writeString(block, fields.name, 0, 100);
  writeOctal(block, fields.mode, 100, 8);
  writeOctal(block, fields.uid, 108, 8);
  writeOctal(block, fields.gid, 116, 8);
  writeOctal(block, fields.size, 124, 12);
  writeOctal(block, fields.mtime, 136, 12);
  block.fill(0x20, 148, 156);
  writeString(block, fields.typeflag, 156, 1);
  writeString(block, fields.linkname, 157, 100);
  writeString(block, 'ustar\u000000', 257, 8);
  // uname/gname stay empty: owners are numeric so layers do not depend on the builder's /etc/passwd.
  writeOctal(block, fields.devmajor, 329, 8);
  writeOctal(block, fields.devminor, 337, 8);
  writeString(block, fields.prefix, 345, 155);
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 8, 'ascii');
  return block;
}

/** Header blocks for one entry: an optional PAX 'x' header (with its data) followed by the ustar header. */
export function encodeTarHeader(fields: TarHeaderFields): Buffer {
  const header = { ...fields, name: asText(fields.name) };
  const records: Buffer[] = [];
  const split = isAscii(header.name) ? splitUstarName(header.name) : null;
  if (split === null) records.push(paxRecord('path', nameBytes(header.name)));
  const linkname = asText(header.linkname ?? '');
  const linkFits = isAscii(linkname) && linkname.length <= 100;
  if (!linkFits) records.push(paxRecord('linkpath', nameBytes(linkname)));
  if (header.size > MAX_OCTAL_11) records.push(paxRecord('size', Buffer.from(String(header.size))));
  if (header.uid > MAX_OCTAL_7) records.push(paxRecord('uid', Buffer.from(String(header.uid))));
  if (header.gid > MAX_OCTAL_7) records.push(paxRecord('gid', Buffer.from(String(header.gid))));
  const mtimeFits = header.mtime >= 0 && header.mtime <= MAX_OCTAL_11;
  if (!mtimeFits) records.push(paxRecord('mtime', Buffer.from(String(header.mtime))));
  const devmajor = header.devmajor ?? 0;
  const devminor = header.devminor ?? 0;
  if (devmajor > MAX_OCTAL_7 || devminor > MAX_OCTAL_7) throw new RangeError(`tar entry ${header.name}: device numbers too large`);
  if (header.xattrs) {
    for (const key of Object.keys(header.xattrs).sort()) {
      const value = header.xattrs[key]!;
      records.push(paxRecord(`SCHILY.xattr.${key}`, typeof value === 'string' ? Buffer.from(value, 'utf8') : value));
    }
  }
  // Records are emitted in a fixed order (path, linkpath, size, uid, gid, mtime, xattrs) so output is deterministic.
  const ustar = ustarBlock({
    name: split ? split.name : asciiFallback(header.name, 100),
    prefix: split ? split.prefix : '',
    typeflag: TYPEFLAG[header.type],
    mode: header.mode & 0o7777,
    uid: Math.min(header.uid, MAX_OCTAL_7),
    gid: Math.min(header.gid, MAX_OCTAL_7),
    size: Math.min(header.size, MAX_OCTAL_11),
    mtime: mtimeFits ? header.mtime : 0,
    linkname: isAscii(linkname) && linkFits ? linkname : asciiFallback(linkname, 100),
    devmajor,
    devminor,
  });
  if (records.length === 0) return ustar;
  const paxData = Buffer.concat(records);
  const paxHeader = ustarBlock({
    name: asciiFallback(`PaxHeaders/${displayName(header.name).replace(/\/$/, '').split('/').pop() ?? ''}`, 100),
    prefix: '',
    typeflag: 'x',
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: paxData.length,
    mtime: 0,
    linkname: '',
    devmajor: 0,
    devminor: 0,
  });
  return Buffer.concat([paxHeader, paxData, tarPadding(paxData.length), ustar]);
}

/** What readers without PAX support see: the name reduced to ASCII and truncated. */
function asciiFallback(value: string | Buffer, length: number): string {
  return displayName(value).replace(/[^\x01-\x7f]/g, '_').slice(0, length);
}

/** Bytes that are valid UTF-8 as a string (so an ASCII name still fits the ustar fields), others as they are. */
function asText(value: string | Buffer): string | Buffer {
  if (typeof value === 'string') return value;
  const text = value.toString('utf8');
  return Buffer.byteLength(text) === value.length && Buffer.from(text, 'utf8').equals(value) ? text : value;
}

function displayName(value: string | Buffer): string {
  return typeof value === 'string' ? value : value.toString('latin1');
}

/** Two zero blocks end an archive. */
export function tarEndOfArchive(): Buffer {
  return Buffer.alloc(2 * TAR_BLOCK_SIZE);
}

/**
 * Why a 512-byte block is not a tar header, or null when it is one (or an all-zero end-of-archive
 * block). The checksum is the only field every tar writer fills in, so it is what tells a tar from
 * other bytes; like GNU tar, a checksum computed over signed bytes is accepted too.
 */
export function tarHeaderProblem(block: Buffer): string | null {
  if (block.length < TAR_BLOCK_SIZE) return `the first tar header needs ${TAR_BLOCK_SIZE} bytes, got ${block.length}`;
  const header = block.subarray(0, TAR_BLOCK_SIZE);
  if (header.every((b) => b === 0)) return null;
  const field = header.subarray(148, 156).toString('latin1').replace(/[\0 ]+$/, '').replace(/^[\0 ]+/, '');
  if (!/^[0-7]{1,8}$/.test(field)) return 'the first 512-byte block is not a tar header (its checksum field is not an octal number)';
  const stored = parseInt(field, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < TAR_BLOCK_SIZE; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : header[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  if (stored !== unsigned && stored !== signed) return 'the first 512-byte block is not a tar header (its checksum does not match)';
  return null;
}

/** Formats a build context or layer is sometimes sent in by mistake, told apart by their first bytes. */
export type ArchiveMagic = 'gzip' | 'zstd' | 'xz' | 'bzip2' | 'zip' | '7z';

const MAGIC: Array<[ArchiveMagic, number[]]> = [
  ['gzip', [0x1f, 0x8b]],
  ['zstd', [0x28, 0xb5, 0x2f, 0xfd]],
  ['xz', [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]],
  ['bzip2', [0x42, 0x5a, 0x68]],
  ['zip', [0x50, 0x4b, 0x03, 0x04]],
  ['7z', [0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c]],
];

/** The compressed or archive format `head` starts with, or null (a plain tar, or unknown bytes). */
export function archiveMagic(head: Buffer): ArchiveMagic | null {
  for (const [format, magic] of MAGIC) {
    if (head.length >= magic.length && magic.every((byte, i) => head[i] === byte)) return format;
  }
  return null;
}

/** Bytes needed to recognise every format archiveMagic knows. */
export const ARCHIVE_MAGIC_BYTES = 6;
