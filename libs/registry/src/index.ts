export * from './image-store.js';
export * from './errors.js';
export * from './path.js';
export * from './token.js';
export * from './access.js';
export * from './manifest-document.js';
export * from './registry.js';
export * from './garbage-collector.js';
