import { MAX_START_TAG, type StartTagStore } from './start-tags.js';

/** A store under test, and a way to say whether builds wait in the queue (an idle queue restarts the schedule). */
export interface StartTagFixture {
  store: StartTagStore;
  setWaiting(waiting: boolean): Promise<void>;
  close?(): Promise<void>;
}

/**
 * What every StartTagStore must do, run against the in-memory store (unit) and the Redis one
 * (integration), so the Lua script and nextStartTag() cannot drift apart.
 */
export function runStartTagConformance(name: string, open: () => Promise<StartTagFixture>): void {
  describe(`${name}: start tags`, () => {
    let f: StartTagFixture;
    beforeEach(async () => {
      f = await open();
      await f.setWaiting(true);
    });
    afterEach(async () => {
      await f.close?.();
    });

    it('numbers a tenant’s builds 1, 2, 3 and starts another tenant at the clock', async () => {
      expect([await f.store.assign('a', 'back'), await f.store.assign('a', 'back'), await f.store.assign('a', 'back')]).toEqual([1, 2, 3]);
      expect(await f.store.assign('b', 'back')).toBe(1);
      await f.store.started(2);
      expect(await f.store.assign('c', 'back')).toBe(3);
      expect(await f.store.assign('a', 'back')).toBe(4);
    });

    it('moves the clock up only', async () => {
      await f.store.started(5);
      await f.store.started(3);
      expect(await f.store.assign('a', 'back')).toBe(6);
    });

    it('places a handed-back build at the clock, leaving the tenant’s last tag alone', async () => {
      for (let n = 0; n < 4; n++) await f.store.assign('a', 'back');
      expect(await f.store.assign('a', 'front')).toBe(1);
      await f.store.started(2);
      expect(await f.store.assign('a', 'front')).toBe(2);
      expect(await f.store.assign('a', 'back')).toBe(5);
    });

    it('starts the schedule over when nothing waits', async () => {
      for (let n = 0; n < 4; n++) await f.store.assign('a', 'back');
      await f.store.started(4);
      await f.setWaiting(false);
      expect(await f.store.assign('a', 'back')).toBe(1);
      await f.setWaiting(true);
      expect(await f.store.assign('a', 'back')).toBe(2);
    });

    it('clamps tags at BullMQ’s highest priority', async () => {
      await f.store.started(MAX_START_TAG);
      expect(await f.store.assign('a', 'back')).toBe(MAX_START_TAG);
      expect(await f.store.assign('a', 'back')).toBe(MAX_START_TAG);
      expect(await f.store.assign('b', 'front')).toBe(MAX_START_TAG);
    });
  });
}
