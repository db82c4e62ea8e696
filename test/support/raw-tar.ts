/**
 * Reads an uncompressed tar in memory with every name, link target and PAX value as bytes: the
 * tests' independent check of what a layer holds (tar-stream decodes names and values as UTF-8).
 */
export interface RawTarEntry {
  name: Buffer;
  /** tar typeflag: '0' file, '1' hard link, '2' symlink, '3' char, '4' block, '5' directory, '6' fifo. */
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  linkname: Buffer;
  devmajor: number;
  devminor: number;
  /** PAX records of the entry, values as bytes. */
  pax: Map<string, Buffer>;
  content: Buffer;
}

function field(block: Buffer, offset: number, length: number): Buffer {
  const end = block.indexOf(0, offset);
  return block.subarray(offset, end === -1 || end > offset + length ? offset + length : end);
}

function octal(block: Buffer, offset: number, length: number): number {
  const text = field(block, offset, length).toString('ascii').trim();
  return text === '' ? 0 : Number.parseInt(text, 8);
}

function parsePax(data: Buffer): Map<string, Buffer> {
  const records = new Map<string, Buffer>();
  let at = 0;
  while (at < data.length) {
    const space = data.indexOf(0x20, at);
    const length = Number.parseInt(data.subarray(at, space).toString('ascii'), 10);
    const record = data.subarray(space + 1, at + length - 1);
    const eq = record.indexOf(0x3d);
    records.set(record.subarray(0, eq).toString('utf8'), record.subarray(eq + 1));
    at += length;
  }
  return records;
}

export function readRawTar(tar: Buffer): RawTarEntry[] {
  const entries: RawTarEntry[] = [];
  let pax = new Map<string, Buffer>();
  let at = 0;
  while (at + 512 <= tar.length) {
    const block = tar.subarray(at, at + 512);
    if (block.every((byte) => byte === 0)) break;
    const size = octal(block, 124, 12);
    const typeflag = String.fromCharCode(block[156] || 0x30);
    const data = tar.subarray(at + 512, at + 512 + size);
    at += 512 + Math.ceil(size / 512) * 512;
    if (typeflag === 'x') {
      pax = parsePax(data);
      continue;
    }
    const prefix = field(block, 345, 155);
    const short = field(block, 0, 100);
    const name = pax.get('path') ?? (prefix.length > 0 ? Buffer.concat([prefix, Buffer.from('/'), short]) : short);
    entries.push({
      name,
      typeflag,
      mode: octal(block, 100, 8),
      uid: octal(block, 108, 8),
      gid: octal(block, 116, 8),
      size: pax.has('size') ? Number(pax.get('size')!.toString()) : size,
      linkname: pax.get('linkpath') ?? field(block, 157, 100),
      devmajor: octal(block, 329, 8),
      devminor: octal(block, 337, 8),
      pax,
      content: Buffer.from(data),
    });
    pax = new Map();
  }
  return entries;
}
