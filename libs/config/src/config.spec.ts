import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ConfigError, loadConfig, openSecrets, sealSecrets, SealedSecretsError } from './index.js';

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

  it('keeps context-store contents 14 days by default and refuses a retention shorter than 16 gc intervals', () => {
    expect(loadConfig(base).gc.contextRetentionMs).toBe(14 * 24 * 3600 * 1000);
    expect(loadConfig({ ...base, STRATA_CONTEXT_RETENTION_MS: String(16 * 3600 * 1000) }).gc.contextRetentionMs).toBe(16 * 3600 * 1000);
    expect(() => loadConfig({ ...base, STRATA_CONTEXT_RETENTION_MS: String(15 * 3600 * 1000) })).toThrow(/STRATA_CONTEXT_RETENTION_MS \(54000000\) must be at least 16 times STRATA_GC_INTERVAL_MS \(3600000\)/);
    expect(loadConfig({ ...base, STRATA_CONTEXT_RETENTION_MS: '60000', STRATA_GC_INTERVAL_MS: '0' }).gc.contextRetentionMs).toBe(60_000);
  });

  it('schedules fairly across tenants unless STRATA_SCHEDULING says fifo, and names a wrong value', () => {
    expect(loadConfig(base).scheduling).toBe('fair');
    expect(loadConfig({ ...base, STRATA_SCHEDULING: 'fifo' }).scheduling).toBe('fifo');
    expect(() => loadConfig({ ...base, STRATA_SCHEDULING: 'drr' })).toThrow('STRATA_SCHEDULING must be fair or fifo, got "drr"');
  });

  it('picks the RUN runtime at start (auto) unless STRATA_RUN_RUNTIME names runc, crun or gVisor, and names a runtime it does not know', () => {
    expect([loadConfig(base).run.runtime, loadConfig(base).run.runscPlatform]).toEqual(['auto', 'ptrace']);
    expect(loadConfig({ ...base, STRATA_RUN_RUNTIME: 'crun' }).run.runtime).toBe('crun');
    expect(loadConfig({ ...base, STRATA_RUN_RUNTIME: 'runc' }).run.runtime).toBe('runc');
    expect(loadConfig({ ...base, STRATA_RUN_RUNTIME: 'runsc', STRATA_RUN_RUNSC_PLATFORM: 'kvm' }).run).toMatchObject({ runtime: 'runsc', runscPlatform: 'kvm' });
    expect(() => loadConfig({ ...base, STRATA_RUN_RUNTIME: 'kata' })).toThrow('STRATA_RUN_RUNTIME must be auto, runc, crun or runsc, got "kata"');
  });

  it('runs RUN steps in user namespaces where the worker can (auto) unless STRATA_RUN_USERNS says otherwise, from a pool of 65536-id ranges it checks', () => {
    expect(loadConfig(base).run).toMatchObject({ userns: 'auto', usernsBase: 2 ** 30, usernsRanges: 256 });
    expect(loadConfig({ ...base, STRATA_RUN_USERNS: '' }).run.userns).toBe('auto');
    expect(loadConfig({ ...base, STRATA_RUN_USERNS: '1' }).run.userns).toBe('on');
    expect(loadConfig({ ...base, STRATA_RUN_USERNS: 'auto' }).run.userns).toBe('auto');
    expect(loadConfig({ ...base, STRATA_RUN_USERNS: '0' }).run.userns).toBe('off');
    expect(() => loadConfig({ ...base, STRATA_RUN_USERNS: 'yes' })).toThrow('STRATA_RUN_USERNS must be 0, 1 or auto, got "yes"');
    expect(loadConfig({ ...base, STRATA_USERNS_BASE: '131072', STRATA_USERNS_RANGES: '8' }).run).toMatchObject({ usernsBase: 131072, usernsRanges: 8 });
    expect(() => loadConfig({ ...base, STRATA_USERNS_BASE: '100000' })).toThrow('STRATA_USERNS_BASE must be a multiple of 65536, got "100000"');
    expect(() => loadConfig({ ...base, STRATA_USERNS_BASE: String(2 ** 31), STRATA_USERNS_RANGES: '40000' })).toThrow('must stay below 2^32 - 1');
  });

  it('takes STRATA_ALLOW_PRIVATE_SOURCES as CIDRs and names a malformed one', () => {
    expect(loadConfig(base).allowPrivateSources).toEqual([]);
    expect(loadConfig({ ...base, STRATA_ALLOW_PRIVATE_SOURCES: '127.0.0.0/8, fd00::/8' }).allowPrivateSources).toEqual(['127.0.0.0/8', 'fd00::/8']);
    expect(() => loadConfig({ ...base, STRATA_ALLOW_PRIVATE_SOURCES: '10.0.0.0' })).toThrow('STRATA_ALLOW_PRIVATE_SOURCES must be comma-separated CIDRs such as 10.0.0.0/8; "10.0.0.0" is not one: it has no /prefix length');
    expect(() => loadConfig({ ...base, STRATA_ALLOW_PRIVATE_SOURCES: '10.0.0.0/33' })).toThrow('the prefix length must be 0 to 32');
    expect(() => loadConfig({ ...base, STRATA_ALLOW_PRIVATE_SOURCES: 'example.com/8' })).toThrow('"example.com" is not an IPv4 or IPv6 address');
  });

  it('needs S3_BUCKET unless STRATA_STORAGE_DIR keeps everything on the filesystem', () => {
    expect(() => loadConfig({ ...base, S3_BUCKET: undefined })).toThrow(new ConfigError('S3_BUCKET is not set'));
    const c = loadConfig({ ...base, S3_BUCKET: undefined, STRATA_STORAGE_DIR: '/var/lib/strata/store' });
    expect(c.storageDir).toBe('/var/lib/strata/store');
    expect(loadConfig(base).storageDir).toBeUndefined();
  });

  it('gives gVisor steps the bridge network too', () => {
    expect(loadConfig(base).run.network).toBe('bridge');
    expect(loadConfig({ ...base, STRATA_RUN_RUNTIME: 'runsc' }).run.network).toBe('bridge');
    expect(loadConfig({ ...base, STRATA_RUN_RUNTIME: 'runsc', STRATA_RUN_NETWORK: 'none' }).run.network).toBe('none');
  });

  it("takes STRATA_RUN_DNS as the forwarder's resolvers and names a wrong entry", () => {
    expect(loadConfig(base).run.dns).toEqual([]);
    expect(loadConfig({ ...base, STRATA_RUN_DNS: '10.0.0.2, 10.0.0.3:5353,fd00::53,[fd00::54]:54' }).run.dns).toEqual([
      { address: '10.0.0.2', port: 53 },
      { address: '10.0.0.3', port: 5353 },
      { address: 'fd00::53', port: 53 },
      { address: 'fd00::54', port: 54 },
    ]);
    expect(() => loadConfig({ ...base, STRATA_RUN_DNS: '10.0.0.2,dns.example' })).toThrow('STRATA_RUN_DNS must be comma-separated resolver addresses such as 10.0.0.2 or 10.0.0.2:5353 ([v6]:port for IPv6); "dns.example" is not one');
    expect(() => loadConfig({ ...base, STRATA_RUN_DNS: '10.0.0.2:70000' })).toThrow('"10.0.0.2:70000" is not one');
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

describe('secrets key', () => {
  it('takes STRATA_SECRETS_KEY as 32 bytes of base64 and refuses anything else', () => {
    const key = Buffer.alloc(32, 7);
    expect(loadConfig({ ...base, STRATA_SECRETS_KEY: key.toString('base64') }).secretsKey.equals(key)).toBe(true);
    expect(loadConfig({ ...base, STRATA_SECRETS_KEY: key.toString('base64url') }).secretsKey.equals(key)).toBe(true);
    expect(() => loadConfig({ ...base, STRATA_SECRETS_KEY: Buffer.alloc(16).toString('base64') })).toThrow('STRATA_SECRETS_KEY must be 32 bytes in base64, got 16 bytes');
    expect(() => loadConfig({ ...base, STRATA_SECRETS_KEY: 'not base64!' })).toThrow('STRATA_SECRETS_KEY must be 32 bytes in base64');
  });

  it('generates the key once under the state directory in development, never in production', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'strata-config-'));
    const first = loadConfig({ ...base, STRATA_STATE_DIR: dir }).secretsKey;
    expect(first.length).toBe(32);
    expect(loadConfig({ ...base, STRATA_STATE_DIR: dir }).secretsKey.equals(first)).toBe(true);
    expect(() => loadConfig({ ...base, NODE_ENV: 'production', STRATA_REGISTRY_SECRET: 'x'.repeat(40) })).toThrow(new ConfigError('STRATA_SECRETS_KEY is not set'));
  });

  it('seals secrets so that only the same key and build id open them', () => {
    const key = Buffer.alloc(32, 1);
    const sealed = sealSecrets(key, 'b1', new Map([['npmrc', Buffer.from('token=abc')]]));
    expect(sealed.includes(Buffer.from('token=abc'))).toBe(false);
    expect(openSecrets(key, 'b1', sealed).get('npmrc')?.toString()).toBe('token=abc');
    expect(() => openSecrets(key, 'b2', sealed)).toThrow(SealedSecretsError);
    expect(() => openSecrets(Buffer.alloc(32, 2), 'b1', sealed)).toThrow(SealedSecretsError);
  });
});
