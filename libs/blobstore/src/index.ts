export * from './storage-driver.js';
export * from './filesystem-driver.js';
export * from './s3-driver.js';
export * from './blob-store.js';
export * from './conformance.js';
export * from './from-config.js';
