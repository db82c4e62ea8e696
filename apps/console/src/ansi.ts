// ANSI SGR escapes to styled segments. The text of a segment is rendered by React as a text node,
// so nothing in a log line can become markup: `<img onerror=…>` stays the characters it is.

export interface AnsiStyle {
  fg: string | null;
  bg: string | null;
  bold: boolean;
  dim: boolean;
  italic: boolean;
  underline: boolean;
  inverse: boolean;
}

export interface AnsiSegment {
  text: string;
  style: AnsiStyle | null;
}

const PLAIN: AnsiStyle = { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false };

// CSI (ESC [ … final byte), OSC (ESC ] … BEL or ESC \), and two-byte escapes.
const ESCAPE = /\x1b\[([0-9;:?]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;

/** The 16 basic colours are CSS classes (themed for light and dark); 256-colour and RGB are exact values. */
function xterm256(n: number): string {
  if (n < 16) return `c${n}`;
  if (n < 232) {
    const v = n - 16;
    const level = (x: number) => (x === 0 ? 0 : 55 + x * 40);
    return `rgb(${level(Math.floor(v / 36))},${level(Math.floor(v / 6) % 6)},${level(v % 6)})`;
  }
  const g = 8 + (n - 232) * 10;
  return `rgb(${g},${g},${g})`;
}

function applySgr(style: AnsiStyle, params: string): AnsiStyle {
  const codes = params === '' ? [0] : params.split(/[;:]/).map((p) => (p === '' ? 0 : Number(p)));
  let s = { ...style };
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i];
    if (c === 0) s = { ...PLAIN };
    else if (c === 1) s.bold = true;
    else if (c === 2) s.dim = true;
    else if (c === 3) s.italic = true;
    else if (c === 4) s.underline = true;
    else if (c === 7) s.inverse = true;
    else if (c === 22) s.bold = s.dim = false;
    else if (c === 23) s.italic = false;
    else if (c === 24) s.underline = false;
    else if (c === 27) s.inverse = false;
    else if (c >= 30 && c <= 37) s.fg = `c${c - 30}`;
    else if (c === 39) s.fg = null;
    else if (c >= 40 && c <= 47) s.bg = `c${c - 40}`;
    else if (c === 49) s.bg = null;
    else if (c >= 90 && c <= 97) s.fg = `c${c - 90 + 8}`;
    else if (c >= 100 && c <= 107) s.bg = `c${c - 100 + 8}`;
    else if (c === 38 || c === 48) {
      let color: string | null = null;
      if (codes[i + 1] === 5 && i + 2 < codes.length) {
        color = xterm256(codes[i + 2] & 255);
        i += 2;
      } else if (codes[i + 1] === 2 && i + 4 < codes.length) {
        color = `rgb(${codes[i + 2] & 255},${codes[i + 3] & 255},${codes[i + 4] & 255})`;
        i += 4;
      }
      if (c === 38) s.fg = color;
      else s.bg = color;
    }
  }
  return s;
}

function isPlain(s: AnsiStyle): boolean {
  return !s.fg && !s.bg && !s.bold && !s.dim && !s.italic && !s.underline && !s.inverse;
}

/** Splits a line into styled segments; escapes other than colours (cursor moves, titles) are dropped. */
export function parseAnsi(line: string): AnsiSegment[] {
  if (!line.includes('\x1b')) return [{ text: line, style: null }];
  const out: AnsiSegment[] = [];
  let style = PLAIN;
  let at = 0;
  ESCAPE.lastIndex = 0;
  for (let m = ESCAPE.exec(line); m; m = ESCAPE.exec(line)) {
    if (m.index > at) out.push({ text: line.slice(at, m.index), style: isPlain(style) ? null : style });
    if (m[2] === 'm') style = applySgr(style, m[1]);
    at = m.index + m[0].length;
  }
  if (at < line.length) out.push({ text: line.slice(at), style: isPlain(style) ? null : style });
  return out;
}

/** The line as a reader sees it, for search and copy. */
export function stripAnsi(line: string): string {
  return line.includes('\x1b') ? line.replace(ESCAPE, '') : line;
}
