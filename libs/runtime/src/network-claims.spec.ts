import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SubnetClaims } from './network-claims.js';

describe('SubnetClaims', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'strata-claims-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const step = (n: number, owner = 'w1') => ({ owner, netns: `strata-${n}`, hostIf: `stn${n}` });

  it('gives every claimer its own link, across instances (workers) sharing the directory', async () => {
    const a = new SubnetClaims(dir, 8);
    const b = new SubnetClaims(dir, 8);
    const claims = await Promise.all([0, 1, 2, 3, 4, 5].map((n) => (n % 2 ? a : b).claim(step(n))));
    expect(new Set(claims.map((c) => c.index)).size).toBe(6);
    await expect(Promise.all([a.claim(step(6)), b.claim(step(7)), a.claim(step(8))])).rejects.toThrow(/no free link .* 8 steps hold one/);
  });

  it('frees a link for the next claim', async () => {
    const claims = new SubnetClaims(dir, 1);
    const first = await claims.claim(step(1));
    await claims.release(first.index);
    expect((await claims.claim(step(2))).index).toBe(first.index);
  });

  it("finds a dead process's claims and a previous worker's on the same data directory, not a live one's", async () => {
    const claims = new SubnetClaims(dir, 16);
    const live = await claims.claim(step(1, 'other'));
    const dead = await claims.claim(step(2, 'other'));
    const previous = await claims.claim(step(3, 'me'));
    const rewrite = (index: number, patch: object) => {
      const file = path.join(dir, String(index));
      writeFileSync(file, JSON.stringify({ ...JSON.parse(readFileSync(file, 'utf8')), ...patch }));
    };
    rewrite(dead.index, { pid: 999_999_999, started: '1' });
    // Same pid number, but a process started at another time: the pid was reused.
    rewrite(previous.index, { started: '0' });
    const found = await claims.leftovers('me');
    expect(found.map((c) => c.netns).sort()).toEqual(['strata-2', 'strata-3']);
    expect(found.some((c) => c.index === live.index)).toBe(false);
  });

  it('frees a leftover only while the claim is still the one read', async () => {
    const claims = new SubnetClaims(dir, 1);
    const old = await claims.claim(step(1));
    await claims.release(old.index);
    await claims.claim(step(2));
    await claims.release(old.index, 'strata-1');
    expect(readdirSync(dir)).toEqual([String(old.index)]);
  });
});
