import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import S3rver from 's3rver';
import { runBlobStoreConformance, runStorageDriverConformance, type DriverFactory } from './conformance.js';
import { S3Driver } from './s3-driver.js';

// One in-process S3 server on loopback for the whole file; each test gets its own bucket.
let server: S3rver;
let endpoint: string;
let directory: string;

beforeAll(async () => {
  directory = await mkdtemp(join(tmpdir(), 'strata-s3rver-'));
  server = new S3rver({ port: 0, address: '127.0.0.1', directory, silent: true });
  const address = await server.run();
  endpoint = `http://127.0.0.1:${address.port}`;
});

afterAll(async () => {
  await server.close();
  await rm(directory, { recursive: true, force: true });
});

const makeS3Driver: DriverFactory = async () => {
  const driver = new S3Driver({
    endpoint,
    region: 'us-east-1',
    bucket: `strata-test-${randomUUID()}`,
    // s3rver 3.7.1 skips signature checks but answers 403 to any access key other than its own.
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    forcePathStyle: true,
  });
  await driver.ensureBucket();
  return { driver, cleanup: async () => driver.client.destroy() };
};

runStorageDriverConformance('S3Driver (s3rver)', makeS3Driver);
runBlobStoreConformance('S3Driver (s3rver)', makeS3Driver);

describe('S3Driver.ensureBucket', () => {
  it('is idempotent', async () => {
    const { driver } = await makeS3Driver();
    await expect((driver as S3Driver).ensureBucket()).resolves.toBeUndefined();
  });
});
