import { jest } from '@jest/globals';
import { JsonLogger, requestLogFields } from './json-logger.js';

describe('JsonLogger: Nest’s log calls as JSON lines', () => {
  const level = process.env.STRATA_LOG_LEVEL;
  let lines: Array<{ stream: string; line: Record<string, unknown> }>;
  beforeEach(() => {
    process.env.STRATA_LOG_LEVEL = 'debug';
    lines = [];
    for (const stream of ['stdout', 'stderr'] as const) {
      jest.spyOn(process[stream], 'write').mockImplementation((chunk: string | Uint8Array) => {
        for (const l of String(chunk).split('\n').filter(Boolean)) lines.push({ stream, line: JSON.parse(l) });
        return true;
      });
    }
  });
  afterEach(() => {
    jest.restoreAllMocks();
    if (level === undefined) delete process.env.STRATA_LOG_LEVEL;
    else process.env.STRATA_LOG_LEVEL = level;
  });

  it('writes log(message, context) as an info line with the context', () => {
    new JsonLogger().log('Mapped {/v1/builds, POST} route', 'RouterExplorer');
    expect(lines).toEqual([{ stream: 'stdout', line: { time: expect.any(String), level: 'info', msg: 'Mapped {/v1/builds, POST} route', context: 'RouterExplorer' } }]);
  });

  it('writes error(message, stack, context) to stderr with the stack; an undefined stack is left out', () => {
    const logger = new JsonLogger();
    logger.error('boom', 'Error: boom\n    at x', 'ExceptionsHandler');
    logger.error({ msg: 'failed', tenantId: 't1', buildId: 'b1' }, undefined, 'HttpError');
    expect(lines).toEqual([
      { stream: 'stderr', line: { time: expect.any(String), level: 'error', msg: 'boom', context: 'ExceptionsHandler', stack: 'Error: boom\n    at x' } },
      { stream: 'stderr', line: { time: expect.any(String), level: 'error', msg: 'failed', tenantId: 't1', buildId: 'b1', context: 'HttpError' } },
    ]);
  });

  it('follows STRATA_LOG_LEVEL', () => {
    process.env.STRATA_LOG_LEVEL = 'warn';
    const logger = new JsonLogger();
    logger.log('hidden', 'NestFactory');
    logger.verbose('hidden too');
    logger.warn('shown', 'X');
    expect(lines.map((l) => l.line.msg)).toEqual(['shown']);
  });

  it('names the tenant and the build a request is about', () => {
    expect(requestLogFields({ method: 'GET', originalUrl: '/v1/builds/0b7c2b7e-2d52-4b8e-9a4c-3f1f7f0e9a11/logs?follow=1', caller: { tenantId: 't1' } })).toEqual({
      method: 'GET',
      path: '/v1/builds/0b7c2b7e-2d52-4b8e-9a4c-3f1f7f0e9a11/logs',
      tenantId: 't1',
      buildId: '0b7c2b7e-2d52-4b8e-9a4c-3f1f7f0e9a11',
    });
  });
});
