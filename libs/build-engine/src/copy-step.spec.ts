import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type Digest, LayerWriter } from '@strata/oci';
import type { BuildContext } from './context.js';
import { buildFailure, buildWith, layerFiles, memoryContext, memorySink, recordingExecutor } from './fakes.test.js';
import type { BaseImage, ImageResolver, RootfsProvider } from './interfaces.js';

/** An image resolver knowing one image, `ref`, whose one layer (stored in `sink`) holds `files`; it records what it was asked. */
async function oneImage(sink: ReturnType<typeof memorySink>, ref: string, files: Record<string, string>): Promise<ImageResolver & { asked: string[] }> {
  const stored = await sink.store(new LayerWriter().pack(Object.entries(files).map(([p, c]) => ({ type: 'file' as const, path: p, content: Buffer.from(c) }))));
  const asked: string[] = [];
  return {
    asked,
    async resolve(r: string): Promise<BaseImage> {
      asked.push(r);
      if (r !== ref) throw new Error(`no image "${r}" here`);
      const config = { architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers' as const, diff_ids: [stored.diffId] }, history: [] };
      return { ref, source: 'registry', manifestDigest: `sha256:${'1'.repeat(64)}` as Digest, config, layers: [stored.descriptor] };
    },
  };
}

describe('copy step', () => {
  /** Lets the engine run until `done()` holds (or a thousand turns of the event loop pass). */
  const settle = async (done: () => boolean) => {
    for (let i = 0; i < 1000 && !done(); i++) await new Promise((resolve) => setImmediate(resolve));
  };

  it('waits for a context still arriving while the steps before it run, then copies from it', async () => {
    let arrive!: (c: BuildContext) => void;
    const context = new Promise<BuildContext>((resolve) => (arrive = resolve));
    const executor = recordingExecutor();
    const building = buildWith('FROM scratch\nRUN first\nCOPY a.txt /a.txt\nRUN second\n', { executor }, { context });
    await settle(() => executor.runs.length > 1);
    // The RUN before the COPY ran; the COPY (and so the RUN after it) waits for the context.
    expect(executor.runs.map((r) => r.line)).toEqual([2]);
    arrive(await memoryContext({ 'a.txt': 'from the context\n' }));
    const { out, deps } = await building;
    expect(executor.runs.map((r) => r.line)).toEqual([2, 4]);
    const copied = await layerFiles(deps.layers, out.image.layers[0].descriptor.digest);
    expect(copied).toEqual([expect.objectContaining({ path: 'a.txt', content: 'from the context\n' })]);
  });

  it('fails at the first COPY from a context that never arrives, with the context\'s error', async () => {
    let fail!: (e: Error) => void;
    const context = new Promise<BuildContext>((_resolve, reject) => (fail = reject));
    const executor = recordingExecutor();
    const building = buildWith('FROM scratch\nRUN first\nCOPY a.txt /a.txt\n', { executor }, { context });
    building.catch(() => undefined);
    await settle(() => executor.runs.length > 0);
    fail(new Error('the build context was refused: too many entries'));
    await expect(building).rejects.toThrow('the build context was refused: too many entries');
    expect(executor.runs.map((r) => r.line)).toEqual([2]);
  });

  it('writes the sources with their parents, owner and mode into a layer', async () => {
    const context = await memoryContext({ 'app/main.js': 'main\n', 'app/lib/x.js': 'x\n' });
    const { out, deps } = await buildWith('FROM scratch\nCOPY --chown=10:20 --chmod=640 app /srv/app/\n', {}, { context });
    const files = await layerFiles(deps.layers, out.image.layers[0].descriptor.digest);
    expect(files.map((f) => [f.path, f.type, f.uid, f.gid, f.type === 'file' ? f.mode.toString(8) : 'dir'])).toEqual(expect.arrayContaining([
      ['srv/app/main.js', 'file', 10, 20, '640'],
      ['srv/app/lib/x.js', 'file', 10, 20, '640'],
    ]));
    expect(files.find((f) => f.path === 'srv/app/main.js')?.content).toBe('main\n');
    expect(out.image.config.history?.[0].created_by).toBe('COPY app /srv/app/ # buildkit');
  });

  it('copies from an earlier stage what that stage wrote', async () => {
    const { out, deps } = await buildWith('FROM scratch AS a\nCOPY a.txt /built/a.txt\nFROM scratch\nCOPY --from=a /built/a.txt /a.txt\n');
    const files = await layerFiles(deps.layers, out.image.layers[0].descriptor.digest);
    expect(files).toEqual([expect.objectContaining({ path: 'a.txt', content: 'a\n' })]);
  });

  it('expands sources and destination with the stage variables', async () => {
    const { out, deps } = await buildWith('FROM scratch\nARG SRC=a.txt\nENV DEST=/opt\nCOPY $SRC ${DEST}/\n');
    const files = await layerFiles(deps.layers, out.image.layers[0].descriptor.digest);
    expect(files.map((f) => f.path)).toEqual(['opt', 'opt/a.txt']);
  });

  it('needs a directory destination for several sources, and names a missing source', async () => {
    const context = await memoryContext({ 'a.txt': 'a', 'b.txt': 'b' });
    expect((await buildFailure('FROM scratch\nCOPY a.txt b.txt /dst\n', {}, { context })).message).toBe('Dockerfile:2: COPY: with more than one source, the destination must be a directory and end with a "/" ("/dst")');
    expect((await buildFailure('FROM scratch\nCOPY missing.txt /\n')).line).toBe(2);
  });

  it('copies from an image named by reference, resolved like FROM once per build', async () => {
    const layers = memorySink();
    const images = await oneImage(layers, 'example.test/tools:1', { 'usr/bin/tool': 'tool v1\n' });
    // The worker reads the image's files from its unpacked layers: here, a directory holding them.
    const root = mkdtempSync(path.join(tmpdir(), 'engine-image-'));
    mkdirSync(path.join(root, 'usr/bin'), { recursive: true });
    writeFileSync(path.join(root, 'usr/bin/tool'), 'tool v1\n');
    const rootfs: RootfsProvider = { open: async () => ({ root, release: async () => undefined }) };
    const { out, deps } = await buildWith('FROM scratch\nCOPY --from=example.test/tools:1 /usr/bin/tool /bin/tool\nCOPY --from=example.test/tools:1 /usr/bin/tool /bin/again\n', { layers, images, rootfs });
    expect(images.asked).toEqual(['example.test/tools:1']);
    const files = await layerFiles(deps.layers, out.image.layers[0].descriptor.digest);
    expect(files).toEqual([expect.objectContaining({ path: 'bin', type: 'directory' }), expect.objectContaining({ path: 'bin/tool', content: 'tool v1\n' })]);
  });

  it('names the line and the image when COPY --from names neither a stage nor an image', async () => {
    const images = await oneImage(memorySink(), 'example.test/tools:1', {});
    const f = await buildFailure('FROM scratch\n\nCOPY --from=tools /x /x\n', { images });
    expect(f.message).toBe('Dockerfile:3: COPY: --from=tools: no image "tools" here');
  });
});
