import type { Digest } from './digest.js';
import { sha256Digest } from './digest.js';
import type { Descriptor } from './types.js';

/**
 * Deterministic JSON: object keys sorted by code point, no whitespace, `undefined`
 * members omitted. Equal values give equal bytes and so equal digests.
 */
export function canonicalJson(value: unknown): Buffer {
  return Buffer.from(encode(value, '$'), 'utf8');
}

function encode(value: unknown, where: string): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError(`canonicalJson: ${where} is not a finite number`);
      return JSON.stringify(value);
    case 'object': {
      if (Array.isArray(value)) {
        return `[${value.map((item, i) => (item === undefined ? 'null' : encode(item, `${where}[${i}]`))).join(',')}]`;
      }
      const record = value as Record<string, unknown>;
      const keys = Object.keys(record)
        .filter((key) => record[key] !== undefined)
        .sort(compareCodePoints);
      return `{${keys.map((key) => `${JSON.stringify(key)}:${encode(record[key], `${where}.${key}`)}`).join(',')}}`;
    }
    default:
      throw new TypeError(`canonicalJson: ${where} has unsupported type ${typeof value}`);
  }
}

function compareCodePoints(a: string, b: string): number {
  // Buffer comparison orders by UTF-8 bytes, which equals code point order (unlike UTF-16 `<`).
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** A JSON document (config, manifest, index) serialised canonically together with its descriptor. */
export interface EncodedJson {
  readonly bytes: Buffer;
  readonly descriptor: Descriptor;
}

export function encodeJsonBlob(mediaType: string, value: unknown): EncodedJson {
  const bytes = canonicalJson(value);
  const digest: Digest = sha256Digest(bytes);
  return { bytes, descriptor: { mediaType, digest, size: bytes.length } };
}
