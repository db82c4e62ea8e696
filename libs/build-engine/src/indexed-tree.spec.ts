import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { indexTar, type LayerEntry, LayerWriter, PackReader } from '@strata/oci';
import { IndexedContext, IndexedTree } from './context.js';
import { IgnoreMatcher } from './ignore.js';

async function tree(files: Record<string, string>): Promise<{ tree: IndexedTree; pack: PackReader }> {
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'indexed-tree-')), 'pack');
  const entries: LayerEntry[] = Object.entries(files).map(([p, c]) => ({ type: 'file', path: p, content: Buffer.from(c) }));
  const { index } = await indexTar(new LayerWriter({ compression: 'none' }).pack(entries).stream, file);
  return { tree: new IndexedTree(index), pack: await PackReader.open(file) };
}

const noDir = async (): Promise<string> => {
  throw new Error('no directory');
};

describe('IndexedTree: a context kept across builds', () => {
  it('answers a second build over the same tree with the same checksums, remembered, the files map shared read-only (not copied)', async () => {
    const { tree: t, pack } = await tree({ 'src/a.txt': 'a\n', 'src/b.txt': 'b\n', 'other/c.txt': 'c\n', '.dockerignore': 'other\n' });
    const first = await IndexedContext.open(t, pack, noDir);
    const [src] = await first.resolve('src');
    const one = await first.checksum([src!]);
    expect(t.checksums.size).toBe(1);

    const second = await IndexedContext.open(t, pack, noDir);
    const [again] = await second.resolve('src');
    const two = await second.checksum([again!]);
    expect(two.digest).toBe(one.digest);
    // The remembered map itself (typed ReadonlyMap): 50,000 entries are not copied for each build.
    expect(two.files).toBe(one.files);
    expect([...two.files.keys()].sort()).toEqual(['src', 'src/a.txt', 'src/b.txt']);

    // Other sources or --exclude patterns are other checksums; the .dockerignore of the tree still applies.
    const [root] = await second.resolve('.');
    const all = await second.checksum([root!]);
    const excluded = await second.checksum([root!], IgnoreMatcher.fromPatterns(['src/b.txt']));
    expect(all.digest).not.toBe(two.digest);
    expect(excluded.digest).not.toBe(all.digest);
    expect(all.files.has('other/c.txt')).toBe(false);
    expect(excluded.files.has('src/b.txt')).toBe(false);
    expect(t.checksums.size).toBe(3);
    await pack.close();
  });

  it('gives what a fresh context over the same index gives', async () => {
    const files = { 'x/1': '1', 'x/2': '22', 'y/3': '333' };
    const kept = await tree(files);
    const fresh = await tree(files);
    const a = await IndexedContext.open(kept.tree, kept.pack, noDir);
    const b = await IndexedContext.open(fresh.tree.index, fresh.pack, noDir);
    const [ra] = await a.resolve('.');
    const [rb] = await b.resolve('.');
    await a.checksum([ra!]);
    expect((await a.checksum([ra!])).digest).toBe((await b.checksum([rb!])).digest);
    await kept.pack.close();
    await fresh.pack.close();
  });

  it('keeps every COPY of a Dockerfile with many of them remembered across rebuilds asked in the same order', async () => {
    const files: Record<string, string> = {};
    for (let d = 0; d < 8; d++) files[`dir${d}/f.txt`] = `${d}\n`;
    const { tree: t, pack } = await tree(files);
    const pass = async (): Promise<string[]> => {
      const ctx = await IndexedContext.open(t, pack, noDir);
      const digests: string[] = [];
      for (let d = 0; d < 8; d++) {
        const [e] = await ctx.resolve(`dir${d}`);
        digests.push((await ctx.checksum([e!])).digest);
      }
      return digests;
    };
    const first = await pass();
    const kept = [...t.checksums.values()];
    expect(kept).toHaveLength(8);
    // The second build computes nothing: the remembered promises answer, and the same digests come back.
    expect(await pass()).toEqual(first);
    expect([...t.checksums.values()].every((p) => kept.includes(p))).toBe(true);
    await pack.close();
  });
});
