export * from './image-store.js';
