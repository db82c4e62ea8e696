import { StringDecoder } from 'node:string_decoder';

export const MAX_LINE_BYTES = 64 * 1024;

/** Cuts a byte stream into lines as they complete; a line longer than `maxBytes` is emitted in pieces. */
export class LineSplitter {
  private readonly decoder = new StringDecoder('utf8');
  private pending = '';

  constructor(
    private readonly emit: (line: string) => void,
    private readonly maxBytes = MAX_LINE_BYTES,
  ) {}

  write(chunk: Buffer): void {
    this.pending += this.decoder.write(chunk);
    let newline: number;
    while ((newline = this.pending.indexOf('\n')) !== -1) {
      this.emitLine(this.pending.slice(0, newline).replace(/\r$/, ''));
      this.pending = this.pending.slice(newline + 1);
    }
    // Characters are at most 4 bytes: cut by length before anything could pass the byte limit.
    while (this.pending.length * 4 > this.maxBytes && Buffer.byteLength(this.pending) > this.maxBytes) {
      const piece = this.cut(this.pending);
      this.emit(piece);
      this.pending = this.pending.slice(piece.length);
    }
  }

  end(): void {
    this.pending += this.decoder.end();
    if (this.pending !== '') this.emitLine(this.pending);
    this.pending = '';
  }

  private emitLine(line: string): void {
    let rest = line;
    while (Buffer.byteLength(rest) > this.maxBytes) {
      const piece = this.cut(rest);
      this.emit(piece);
      rest = rest.slice(piece.length);
    }
    this.emit(rest);
  }

  /** The longest prefix within maxBytes that does not split a surrogate pair. */
  private cut(text: string): string {
    let end = Math.min(text.length, this.maxBytes);
    while (Buffer.byteLength(text.slice(0, end)) > this.maxBytes) end = Math.floor(end * 0.9);
    const code = text.charCodeAt(end - 1);
    if (code >= 0xd800 && code <= 0xdbff) end -= 1;
    return text.slice(0, end);
  }
}
