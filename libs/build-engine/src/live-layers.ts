// What one build has written and where it still has it: uploads in flight, the sources of each
// layer's files (for COPY --from), and the uncompressed tars a RUN stacked on them unpacks.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { type Digest, type FileContent, type LayerEntry, LayerWriter, normalizeLayerPath, type PackedLayer } from '@strata/oci';
import type { ImageLayer, StageResult } from './build-input.js';
import type { LayerSink, RootfsProvider, RootfsView } from './interfaces.js';
import type { RootfsIndexer } from './rootfs-index.js';

/** A layer as the runtime gets it: `open`, when set, gives its tar from where this build has it. */
export type LayerRef = ImageLayer & { open?: () => Readable | Promise<Readable> };

/**
 * The layers of one build, from the first step to the end of the build. {@link settle} waits for
 * every upload and the cache entries written after them; {@link release} gives back stage views.
 */
export class LiveLayers {
  /** Layer digest → path in the layer → where the file's content is. */
  private readonly contents = new Map<string, Map<string, FileContent>>();
  /** Layer digest → its uncompressed tar, written again from the same sources. */
  private readonly tars = new Map<string, () => Readable>();
  /** Layer digest → its upload, for layers still being stored. */
  private readonly stored = new Map<string, Promise<void>>();
  /** Uploads and the cache entries waiting on them: all settle before the build's image is returned. */
  private readonly pending: Array<Promise<unknown>> = [];
  /** Read-only views of stages that COPY --from reads, one per stage, released when the build ends. */
  private readonly views = new Map<StageResult, Promise<RootfsView>>();

  /** Files layers of this build read until it ends (an ADD archive's bodies), removed on release. */
  private scratchDir: Promise<string> | null = null;

  constructor(
    private readonly layers: LayerSink,
    private readonly indexer: RootfsIndexer,
    private readonly rootfs: RootfsProvider | undefined,
  ) {}

  /**
   * Stores a layer and indexes it from what was written, so later COPY steps need not read it
   * back; its files' sources stay at hand for COPY --from until the build ends.
   */
  async store(packed: PackedLayer, entries: readonly LayerEntry[], clampMtime?: number): Promise<ImageLayer> {
    const { stored, ...layer } = await this.layers.store(packed);
    this.indexer.seed(layer.descriptor.digest, (await packed.result).entries);
    if (stored) {
      this.stored.set(layer.descriptor.digest, stored);
      this.pending.push(stored);
    }
    const contents = new Map<string, FileContent>();
    let reusable = entries.length > 0;
    for (const e of entries) {
      if (e.type !== 'file') continue;
      const c = e.content;
      // One-shot streams cannot be read twice; everything else can.
      if ('stream' in c && typeof c.stream !== 'function') {
        reusable = false;
        continue;
      }
      contents.set(normalizeLayerPath(e.path, false), c);
    }
    // A hard link's content is its target's (an ADD archive's links, say).
    for (const e of entries) {
      const target = e.type === 'hardlink' ? contents.get(normalizeLayerPath(e.target, false)) : undefined;
      if (target) contents.set(normalizeLayerPath(e.path, false), target);
    }
    this.contents.set(layer.descriptor.digest, contents);
    // A RUN stacked on this layer unpacks it from the same sources, uncompressed, not from the store.
    if (reusable) this.tars.set(layer.descriptor.digest, () => new LayerWriter({ clampMtime, compression: 'none' }).pack(entries).stream);
    return layer;
  }

  /** Where the content of `at` in a layer this build wrote is, if it has it. */
  content(layer: string, at: string): FileContent | undefined {
    return this.contents.get(layer)?.get(at);
  }

  /** The upload of a layer this build is still storing, if any. */
  upload(layer: Digest): Promise<void> | undefined {
    return this.stored.get(layer);
  }

  /** Work the build's image waits for (a cache entry written once its layer is durable). */
  wait(p: Promise<unknown>): void {
    p.catch(() => undefined); // reported when the build settles
    this.pending.push(p);
  }

  /** Layers as the runtime gets them: those this build wrote come from where the build has them, not the store. */
  refs(layers: readonly ImageLayer[]): LayerRef[] {
    return layers.map((l) => {
      const d = l.descriptor.digest;
      const open = this.tars.get(d) ?? (this.stored.has(d) ? () => this.layers.open(d) : undefined);
      return open ? { ...l, open } : l;
    });
  }

  /** A read-only view of a finished stage, opened once per build. */
  stageView(stage: StageResult): Promise<RootfsView> {
    let view = this.views.get(stage);
    if (!view) {
      view = this.rootfs!.open(this.refs(stage.layers));
      this.views.set(stage, view);
    }
    return view;
  }

  /** Waits for every upload and pending cache entry; rejects with the first failure. */
  async settle(): Promise<void> {
    await Promise.all(this.pending);
  }

  /** Waits for everything to end, failed or not. */
  async drain(): Promise<void> {
    await Promise.allSettled(this.pending);
  }

  /** A directory for files this build's layers are written from; it lives until {@link release}. */
  scratch(): Promise<string> {
    return (this.scratchDir ??= mkdtemp(path.join(tmpdir(), 'strata-build-')));
  }

  /** Releases the stage views and the scratch directory. */
  async release(): Promise<void> {
    const views = [...this.views.values()];
    this.views.clear();
    for (const view of views) await view.then((v) => v.release()).catch(() => undefined);
    const scratch = this.scratchDir;
    this.scratchDir = null;
    if (scratch) await rm(await scratch, { recursive: true, force: true }).catch(() => undefined);
  }
}
