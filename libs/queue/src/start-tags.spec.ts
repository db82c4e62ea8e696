import { runStartTagConformance } from './start-tags.conformance.js';
import { MAX_START_TAG, MemoryStartTags, nextStartTag, type Placement } from './start-tags.js';

/**
 * BullMQ's order on fakes: jobs without a priority first, in the order added; then by priority, ties
 * in the order added (its score is priority * 2^32 + a counter). A take is one freed worker slot.
 */
class FakeBuildsQueue {
  private seq = 0;
  private readonly jobs: Array<{ id: string; tenant: string; priority: number; seq: number }> = [];
  readonly started: string[] = [];

  constructor(private readonly tags: MemoryStartTags | null) {}

  async add(id: string, tenant: string, placement: Placement = 'back'): Promise<void> {
    const priority = this.tags ? await this.tags.assign(tenant, placement) : 0;
    this.jobs.push({ id, tenant, priority, seq: this.seq++ });
  }

  /** A slot frees: the worker takes the next job and its build starts. */
  async take(): Promise<string | undefined> {
    this.jobs.sort((a, b) => (a.priority === 0) !== (b.priority === 0) ? (a.priority === 0 ? -1 : 1) : a.priority - b.priority || a.seq - b.seq);
    const job = this.jobs.shift();
    if (!job) return undefined;
    await this.tags?.started(job.priority);
    this.started.push(job.id);
    return job.id;
  }

  cancel(id: string): void {
    this.jobs.splice(this.jobs.findIndex((j) => j.id === id), 1);
  }

  get waiting(): number {
    return this.jobs.length;
  }

  async drain(): Promise<string[]> {
    while ((await this.take()) !== undefined);
    return this.started;
  }
}

const fair = () => {
  const tags: MemoryStartTags = new MemoryStartTags(() => queue.waiting === 0);
  const queue: FakeBuildsQueue = new FakeBuildsQueue(tags);
  return { queue, tags };
};

/** Longest run of consecutive starts of one tenant (ids are `<tenant>-<n>`). */
const longestRun = (order: string[], tenant: string) => {
  let best = 0;
  let run = 0;
  for (const id of order) {
    run = id.startsWith(`${tenant}-`) ? run + 1 : 0;
    best = Math.max(best, run);
  }
  return best;
};

describe('start tags: fair scheduling across tenants on BullMQ priorities', () => {
  it('starts a quiet tenant’s build at the next or the one after next free slot, behind a 200-build backlog', async () => {
    const { queue } = fair();
    for (let n = 0; n < 200; n++) await queue.add(`a-${n}`, 'a');
    for (let n = 0; n < 37; n++) await queue.take();
    await queue.add('b-0', 'b');
    const next = [await queue.take(), await queue.take()];
    expect(next).toContain('b-0');
    const order = await queue.drain();
    expect(order).toHaveLength(201);
    expect(new Set(order).size).toBe(201);
  });

  it('FIFO, the same arrival, makes the quiet tenant wait for the whole backlog (what fair scheduling replaces)', async () => {
    const queue = new FakeBuildsQueue(null);
    for (let n = 0; n < 200; n++) await queue.add(`a-${n}`, 'a');
    for (let n = 0; n < 37; n++) await queue.take();
    await queue.add('b-0', 'b');
    const order = await queue.drain();
    expect(order.indexOf('b-0')).toBe(200);
  });

  it('alternates two backlogged tenants one build each, even when the second arrives half way through the first’s backlog', async () => {
    const { queue } = fair();
    for (let n = 0; n < 200; n++) await queue.add(`a-${n}`, 'a');
    for (let n = 0; n < 100; n++) await queue.take();
    for (let n = 0; n < 200; n++) await queue.add(`b-${n}`, 'b');
    const order = (await queue.drain()).slice(100);
    // While both wait, they alternate; a tenant that arrives late gets no run of its backlog.
    expect(longestRun(order.slice(0, 200), 'a')).toBeLessThanOrEqual(2);
    expect(longestRun(order.slice(0, 200), 'b')).toBeLessThanOrEqual(2);
    expect(order.slice(0, 200).filter((id) => id.startsWith('b-'))).toHaveLength(100);
  });

  it('gives three backlogged tenants one start each per round, and keeps each tenant’s own builds in order', async () => {
    const { queue } = fair();
    for (let n = 0; n < 30; n++) for (const t of ['a', 'b', 'c']) if (t !== 'c' || n < 10) await queue.add(`${t}-${n}`, t);
    const order = await queue.drain();
    for (let round = 0; round < 10; round++) {
      expect(order.slice(round * 3, round * 3 + 3).map((id) => id[0]).sort()).toEqual(['a', 'b', 'c']);
    }
    for (const t of ['a', 'b', 'c']) {
      const mine = order.filter((id) => id.startsWith(`${t}-`)).map((id) => Number(id.slice(2)));
      expect(mine).toEqual([...mine].sort((x, y) => x - y));
    }
  });

  it('puts a handed-back build at the front of its tenant’s line without taking a new tag', async () => {
    const { queue, tags } = fair();
    for (let n = 0; n < 10; n++) await queue.add(`a-${n}`, 'a');
    await queue.take();
    const lastBefore = tags.last.get('a');
    // a-0's worker died: the reconciler queues it again at the front.
    await queue.add('a-0-again', 'a', 'front');
    expect(tags.last.get('a')).toBe(lastBefore);
    expect(await queue.take()).toBe('a-0-again');
  });

  it('never starts a cancelled queued build, and its tenant’s other builds keep their rounds', async () => {
    const { queue } = fair();
    for (let n = 0; n < 20; n++) await queue.add(`a-${n}`, 'a');
    for (let n = 0; n < 5; n++) await queue.add(`b-${n}`, 'b');
    queue.cancel('b-0');
    const order = await queue.drain();
    expect(order).not.toContain('b-0');
    expect(order.slice(0, 9)).toEqual(['a-0', 'a-1', 'b-1', 'a-2', 'b-2', 'a-3', 'b-3', 'a-4', 'b-4']);
  });

  it('starts again from zero once nothing waits, so tags stay small; past BullMQ’s limit they are clamped', async () => {
    const { queue, tags } = fair();
    for (let n = 0; n < 50; n++) await queue.add(`a-${n}`, 'a');
    await queue.drain();
    expect(tags.clock).toBe(50);
    await queue.add('b-0', 'b');
    expect(tags.clock).toBe(0);
    expect(tags.last.get('a')).toBeUndefined();
    expect(tags.last.get('b')).toBe(1);
    expect(nextStartTag(MAX_START_TAG, MAX_START_TAG, 'back')).toEqual({ tag: MAX_START_TAG, last: MAX_START_TAG });
    expect(nextStartTag(0, undefined, 'front')).toEqual({ tag: 1, last: undefined });
  });
});

runStartTagConformance('MemoryStartTags', async () => {
  let waiting = true;
  return {
    store: new MemoryStartTags(() => !waiting),
    async setWaiting(w) {
      waiting = w;
    },
  };
});
