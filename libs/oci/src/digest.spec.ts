import { Readable } from 'node:stream';
import { canonicalJson, encodeJsonBlob } from './canonical-json.js';
import { DigestingStream, InvalidDigestError, isDigest, parseDigest, sha256Digest } from './digest.js';

const EMPTY_SHA256 = 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

describe('Digest', () => {
  it('accepts only sha256 with 64 lowercase hex characters', () => {
    expect(parseDigest(EMPTY_SHA256)).toBe(EMPTY_SHA256);
    for (const bad of ['', 'sha256:', 'sha512:' + 'a'.repeat(128), 'sha256:' + 'A'.repeat(64), 'sha256:' + 'a'.repeat(63), ' sha256:' + 'a'.repeat(64), 'sha256:../' + 'a'.repeat(61)]) {
      expect(isDigest(bad)).toBe(false);
      expect(() => parseDigest(bad)).toThrow(InvalidDigestError);
    }
    expect(() => parseDigest('md5:abc')).toThrow('invalid digest "md5:abc": expected "sha256:" followed by 64 lowercase hex characters');
  });

  it('hashes buffers and streams to the same digest', async () => {
    expect(sha256Digest(Buffer.alloc(0))).toBe(EMPTY_SHA256);
    const hasher = new DigestingStream();
    const data = Buffer.from('streamed content');
    for await (const _chunk of Readable.from([data.subarray(0, 4), data.subarray(4)]).pipe(hasher)) {
      // drain
    }
    expect(hasher.digest).toBe(sha256Digest(data));
    expect(hasher.size).toBe(data.length);
  });
});

describe('canonicalJson', () => {
  it('sorts keys at every depth and drops undefined members, so equal values give equal digests', () => {
    const a = { b: 1, a: { d: [1, { z: true, y: null }], c: 'x' }, u: undefined };
    const b = { a: { c: 'x', d: [1, { y: null, z: true }] }, b: 1 };
    expect(canonicalJson(a).toString()).toBe('{"a":{"c":"x","d":[1,{"y":null,"z":true}]},"b":1}');
    expect(encodeJsonBlob('application/json', a).descriptor.digest).toBe(encodeJsonBlob('application/json', b).descriptor.digest);
  });

  it('refuses values JSON cannot represent', () => {
    expect(() => canonicalJson({ size: Number.NaN })).toThrow('$.size is not a finite number');
  });
});
