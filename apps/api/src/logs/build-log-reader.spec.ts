import fc from 'fast-check';
import type { BuildLogEvent } from '@strata/queue';
import { sseFromArchived, sseFromStored, sseMessage } from './build-log-reader.js';

describe('sseFromStored', () => {
  it('gives the same message as decoding the entry and writing it with sseMessage', () => {
    const event = fc.oneof(
      fc.record({
        type: fc.constant('log' as const),
        stage: fc.option(fc.nat(9)),
        step: fc.option(fc.nat(99)),
        stream: fc.constantFrom('stdout' as const, 'stderr' as const, 'system' as const),
        line: fc.string({ unit: 'binary' }),
        time: fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
      }),
      fc.record({
        type: fc.constant('step' as const),
        stage: fc.nat(9),
        index: fc.nat(99),
        instruction: fc.string(),
        status: fc.constantFrom('running' as const, 'done' as const),
        cached: fc.boolean(),
        durationMs: fc.option(fc.nat()),
      }),
      fc.record({ type: fc.constant('end' as const), status: fc.constantFrom('succeeded' as const, 'failed' as const, 'cancelled' as const) }),
    );
    fc.assert(
      fc.property(event, (e: BuildLogEvent) => {
        const stored = JSON.stringify(e);
        expect(sseFromStored('1700000000000-7', stored)).toEqual({ type: e.type, message: sseMessage({ ...e, id: '1700000000000-7' }) });
      }),
    );
  });

  it('declines entries of another shape, which are then decoded', () => {
    expect(sseFromStored('1-0', '{"stage":0,"type":"log"}')).toBeNull();
    expect(sseFromStored('1-0', '{"type":"lo\\"g","x":1}')).toBeNull();
    expect(sseFromStored('1-0', 'not json')).toBeNull();
    expect(sseFromStored('1-0', '{"type":"end"}')).toEqual({ type: 'end', message: 'id: 1-0\nevent: end\ndata: {}\n\n' });
  });
});

describe('sseFromArchived', () => {
  it('takes the id off the end of an archive line and gives the same message as sseMessage', () => {
    const entry = { type: 'log' as const, stage: 0, step: 1, stream: 'stdout' as const, line: 'a "quoted" ,"id":"1-1"} line', time: '2026-01-01T00:00:00.000Z', id: '1700000000000-3' };
    expect(sseFromArchived(JSON.stringify(entry))).toEqual({ id: entry.id, type: 'log', message: sseMessage(entry) });
    expect(sseFromArchived(JSON.stringify({ type: 'end', status: 'failed', id: '5-0' }))).toEqual({ id: '5-0', type: 'end', message: 'id: 5-0\nevent: end\ndata: {"status":"failed"}\n\n' });
    expect(sseFromArchived('{"id":"5-0","type":"end"}')).toBeNull();
  });
});
