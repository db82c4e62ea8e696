export { LayerStore, type LayerStoreOptions, type LayerSource, type Snapshot, type LayerInfo, type GcResult } from './layer-store.js';
export { unpackLayer, LayerUnpackError, type UnpackResult } from './unpack.js';
export { diffUpperDir, type DiffOptions } from './diff.js';
export { RuncExecutor, ContainerStartError, type RuncExecutorOptions } from './runc-executor.js';
export { BridgeNetwork, type BridgeNetworkOptions, type NetworkAttachment } from './network.js';
export { resolveUser, UserResolutionError, type ResolvedUser } from './user.js';
export { buildRuntimeSpec, DEFAULT_CAPABILITIES, MASKED_PATHS, READONLY_PATHS, type RuntimeSpecInput } from './runtime-spec.js';
export { LineSplitter, MAX_LINE_BYTES } from './line-splitter.js';
export type { NetworkMode, ResourceLimits, RunMount, RunSpec, RunOptions, RunResult, OutputStream } from './types.js';
