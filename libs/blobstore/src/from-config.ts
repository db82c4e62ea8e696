import { BlobStore } from './blob-store.js';
import { FilesystemDriver } from './filesystem-driver.js';
import { S3Driver, type S3DriverOptions } from './s3-driver.js';
import type { StorageDriver } from './storage-driver.js';

/** The bucket as api and worker use it: keyed objects (contexts/, logs/) and content-addressed blobs. */
export interface Storage {
  objects: StorageDriver;
  blobs: BlobStore;
}

/**
 * Connects to the configured S3 bucket, creating it when missing; or, when `directory` is given
 * (STRATA_STORAGE_DIR), keeps everything as files under it.
 */
export async function storageFromConfig(s3: Omit<S3DriverOptions, 'client'>, directory?: string): Promise<Storage> {
  if (directory) {
    const files = new FilesystemDriver(directory);
    return { objects: files, blobs: new BlobStore(files) };
  }
  const driver = new S3Driver(s3);
  await driver.ensureBucket();
  return { objects: driver, blobs: new BlobStore(driver) };
}
