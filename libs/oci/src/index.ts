export * from './media-types.js';
export * from './digest.js';
export * from './types.js';
export * from './canonical-json.js';
export * from './whiteout.js';
export * from './tar-format.js';
export * from './layer-writer.js';
