import { buildFailure, buildWith, layerFiles, memoryContext } from './fakes.test.js';

describe('copy step', () => {
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
});
