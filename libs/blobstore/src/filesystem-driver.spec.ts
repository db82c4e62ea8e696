import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBlobStoreConformance, runStorageDriverConformance, type DriverFactory } from './conformance.js';
import { FilesystemDriver } from './filesystem-driver.js';

const makeFilesystemDriver: DriverFactory = async () => {
  const root = await mkdtemp(join(tmpdir(), 'strata-fs-driver-'));
  return { driver: new FilesystemDriver(root), cleanup: () => rm(root, { recursive: true, force: true }) };
};

runStorageDriverConformance('FilesystemDriver', makeFilesystemDriver);
runBlobStoreConformance('FilesystemDriver', makeFilesystemDriver);
