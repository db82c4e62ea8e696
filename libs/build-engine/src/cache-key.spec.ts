import type { Digest } from '@strata/oci';
import { lookupStep, stepCacheKey, stepFingerprint, type StepIdentity } from './cache-key.js';
import { fakeDeps } from './fakes.test.js';
import type { BuildScope } from './step-context.js';
import { MAX_FINGERPRINT_FILES } from './miss-reason.js';

const step: StepIdentity = { kind: 'RUN', line: 3, parent: 'sha256:p', definition: { args: ['make'] }, args: [['V', '1']] };

describe('step cache keys', () => {
  it('change with the parent, the definition and the build args the step saw, and nothing else', () => {
    const key = stepCacheKey(step);
    expect(stepCacheKey({ ...step, line: 9 })).toBe(key);
    expect(stepCacheKey({ ...step, parent: 'sha256:q' })).not.toBe(key);
    expect(stepCacheKey({ ...step, definition: { args: ['make', 'all'] } })).not.toBe(key);
    expect(stepCacheKey({ ...step, args: [['V', '2']] })).not.toBe(key);
    expect(key).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  it('fingerprints a step with its base image and at most MAX_FINGERPRINT_FILES files', () => {
    const files = new Map(Array.from({ length: MAX_FINGERPRINT_FILES + 1 }, (_, i) => [`f${i}`, `h${i}`] as [string, string]));
    const f = stepFingerprint({ ...step, files }, { ref: 'busybox:1', digest: 'sha256:d' });
    expect(f).toMatchObject({ kind: 'RUN', line: 3, args: { V: '1' }, base: { ref: 'busybox:1', digest: 'sha256:d' }, filesTruncated: true, parent: 'sha256:p' });
    expect(Object.keys(f.files!)).toHaveLength(MAX_FINGERPRINT_FILES);
    expect(stepFingerprint(step)).not.toHaveProperty('base');
  });

  it('treats a cache entry whose layer blob is gone as a miss, unless the index already checks layers', async () => {
    const deps = fakeDeps();
    const layer = { descriptor: { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: 'sha256:gone' as Digest, size: 1 }, diffId: 'sha256:x' as Digest };
    await deps.cache.put('k', { layer });
    const build = { deps } as unknown as BuildScope;
    expect(await lookupStep(build, 'k')).toBeNull();
    const trusting = { deps: { ...deps, cache: { ...deps.cache, checksLayers: true } } } as unknown as BuildScope;
    expect(await lookupStep(trusting, 'k')).toEqual({ layer });
  });
});
