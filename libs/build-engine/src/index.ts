export * from './interfaces.js';
export * from './context.js';
export * from './ignore.js';
export * from './engine.js';
export * from './rootfs-index.js';
export * from './miss-reason.js';
