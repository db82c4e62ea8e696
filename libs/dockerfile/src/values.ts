// Value formats Dockerfile flags use, parsed the way the Go libraries behind BuildKit parse them.

/** Go's strconv.ParseBool. */
export function parseGoBool(s: string): boolean | null {
  switch (s) {
    case '1': case 't': case 'T': case 'true': case 'TRUE': case 'True':
      return true;
    case '0': case 'f': case 'F': case 'false': case 'FALSE': case 'False':
      return false;
    default:
      return null;
  }
}

/** Go's strconv.ParseUint(s, base, 32) for base 8 or 10 (no sign, prefix or underscores). */
export function parseUint32(s: string, base: 8 | 10): number | null {
  const re = base === 8 ? /^[0-7]+$/ : /^[0-9]+$/;
  if (!re.test(s)) return null;
  const n = parseInt(s, base);
  return n <= 0xffffffff ? n : null;
}

const DURATION_UNITS: Record<string, number> = {
  ns: 1, us: 1e3, 'µs': 1e3, 'μs': 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9,
};

/** Go's time.ParseDuration, in nanoseconds (`1m30s`, `2.5h`, `300ms`); null when invalid. */
export function parseGoDuration(s: string): number | null {
  let rest = s;
  let sign = 1;
  if (rest.startsWith('-') || rest.startsWith('+')) {
    if (rest[0] === '-') sign = -1;
    rest = rest.slice(1);
  }
  if (rest === '0') return 0;
  if (rest === '') return null;
  let total = 0;
  const part = /^([0-9]*)(?:\.([0-9]*))?([^0-9.]+)/;
  while (rest !== '') {
    const m = part.exec(rest);
    if (!m) return null;
    const [all, whole, frac, unitText] = m;
    if (whole === '' && (frac === undefined || frac === '')) return null;
    // The unit runs until the next digit or dot.
    const unit = DURATION_UNITS[unitText];
    if (unit === undefined) return null;
    total += (Number(whole === '' ? '0' : whole) + (frac ? Number(`0.${frac}`) : 0)) * unit;
    rest = rest.slice(all.length);
  }
  return sign * Math.round(total);
}

/** docker/go-units RAMInBytes: `64m`, `1g`, `512k`, `1.5GiB` (binary multiples). */
export function parseRamInBytes(s: string): number | null {
  const m = /^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$/.exec(s);
  if (!m) return null;
  if (!/^\d+(\.\d+)?$/.test(m[1])) return null;
  const size = Number(m[1]);
  const mult: Record<string, number> = { k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4, p: 1024 ** 5 };
  const unit = m[2] ? mult[m[2].toLowerCase()] : 1;
  return Math.trunc(size * unit);
}

/** Splits one CSV record the way encoding/csv does (quoted fields, `""` inside quotes). */
export function parseCsvRecord(s: string): string[] | string {
  const fields: string[] = [];
  let i = 0;
  if (s === '') return [];
  for (;;) {
    if (s[i] === '"') {
      let field = '';
      i++;
      for (;;) {
        if (i >= s.length) return 'extraneous or missing " in quoted-field';
        if (s[i] === '"') {
          if (s[i + 1] === '"') {
            field += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        field += s[i++];
      }
      fields.push(field);
      if (i === s.length) return fields;
      if (s[i] !== ',') return 'extraneous or missing " in quoted-field';
      i++;
    } else {
      const comma = s.indexOf(',', i);
      const field = comma < 0 ? s.slice(i) : s.slice(i, comma);
      if (field.includes('"')) return 'bare " in non-quoted-field';
      fields.push(field);
      if (comma < 0) return fields;
      i = comma + 1;
    }
  }
}
