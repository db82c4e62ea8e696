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

  it('names the variable that is missing', () => {
    expect(() => loadConfig({ ...base, DATABASE_URL: undefined })).toThrow(new ConfigError('DATABASE_URL is not set'));
  });

  it('names the variable that is malformed and what it got', () => {
    expect(() => loadConfig({ ...base, PORT: 'eighty' })).toThrow('PORT must be an integer of at least 0, got "eighty"');
    expect(() => loadConfig({ ...base, REDIS_URL: 'http://x' })).toThrow('REDIS_URL must use redis: or rediss:, got "http:"');
  });
});
