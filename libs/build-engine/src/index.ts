export * from './interfaces.js';
export * from './context.js';
export * from './ignore.js';
export type { BuildInput, BuildOutput, EngineDeps, ImageLayer, Platform, StageResult } from './build-input.js';
export { BuildEngine } from './solver.js';
export * from './rootfs-index.js';
export * from './miss-reason.js';
