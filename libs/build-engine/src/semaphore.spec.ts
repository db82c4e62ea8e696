import { Semaphore } from './semaphore.js';

describe('Semaphore', () => {
  it('lets as many holders in as it has slots, the next one when a slot is given back, in order', async () => {
    const slots = new Semaphore(2);
    const first = await slots.acquire();
    await slots.acquire();
    const order: string[] = [];
    const third = slots.acquire().then((release) => {
      order.push('third');
      return release;
    });
    const fourth = slots.acquire().then(() => order.push('fourth'));
    await new Promise((r) => setTimeout(r, 5));
    expect(order).toEqual([]);
    first();
    first(); // giving a slot back twice frees it once
    await third;
    await new Promise((r) => setTimeout(r, 5));
    expect(order).toEqual(['third']);
    (await third)();
    await fourth;
    expect(order).toEqual(['third', 'fourth']);
  });
});
