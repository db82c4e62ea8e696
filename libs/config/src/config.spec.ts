import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ConfigError, loadConfig } from './index.js';

const base = {
  DATABASE_URL: 'postgresql://postgres@127.0.0.1:5432/strata',
  REDIS_URL: 'redis://127.0.0.1:6379/0',
  S3_BUCKET: 'strata',
  S3_ENDPOINT: 'http://127.0.0.1:4569',
};

describe('loadConfig', () => {
  it('defaults the port to 3000 and uses path-style S3 for a custom endpoint', () => {
    const c = loadConfig(base);
    expect(c.port).toBe(3000);
    expect(c.publicUrl).toBe('http://127.0.0.1:3000');
    expect(c.s3.forcePathStyle).toBe(true);
  });

  it('gives build logs generous caps by default and takes them from the environment', () => {
    expect(loadConfig(base).log).toEqual({ stepMaxBytes: 4 * 1024 ** 2, buildMaxBytes: 64 * 1024 ** 2, lineMaxBytes: 16 * 1024, streamTtlSeconds: 3600 });
    expect(loadConfig({ ...base, STRATA_LOG_STEP_MAX_BYTES: '2048' }).log.stepMaxBytes).toBe(2048);
    expect(() => loadConfig({ ...base, STRATA_LOG_LINE_MAX_BYTES: '10' })).toThrow('STRATA_LOG_LINE_MAX_BYTES must be an integer of at least 256, got "10"');
  });

  it('names the variable that is missing', () => {
    expect(() => loadConfig({ ...base, DATABASE_URL: undefined })).toThrow(new ConfigError('DATABASE_URL is not set'));
  });

  it('names the variable that is malformed and what it got', () => {
    expect(() => loadConfig({ ...base, PORT: 'eighty' })).toThrow('PORT must be an integer of at least 0, got "eighty"');
    expect(() => loadConfig({ ...base, REDIS_URL: 'http://x' })).toThrow('REDIS_URL must use redis: or rediss:, got "http:"');
  });

  it('uses STRATA_REGISTRY_SECRET and refuses a short one', () => {
    const secret = 'x'.repeat(40);
    expect(loadConfig({ ...base, STRATA_REGISTRY_SECRET: secret }).registrySecret).toBe(secret);
    expect(() => loadConfig({ ...base, STRATA_REGISTRY_SECRET: 'short' })).toThrow('STRATA_REGISTRY_SECRET must be at least 32 characters long, got 5');
  });

  it('generates the registry secret once under the state directory in development, never in production', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'strata-config-'));
    const first = loadConfig({ ...base, STRATA_STATE_DIR: dir }).registrySecret;
    expect(first.length).toBeGreaterThanOrEqual(32);
    expect(loadConfig({ ...base, STRATA_STATE_DIR: dir }).registrySecret).toBe(first);
    expect(readFileSync(path.join(dir, 'registry-secret'), 'utf8')).toBe(first);
    expect(() => loadConfig({ ...base, NODE_ENV: 'production' })).toThrow(new ConfigError('STRATA_REGISTRY_SECRET is not set'));
  });
});
