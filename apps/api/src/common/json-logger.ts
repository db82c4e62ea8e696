import type { LoggerService } from '@nestjs/common';
import { type LogFields, type LogLevel, logEvent } from '@strata/queue';

/**
 * Nest's own lines (bootstrap, route mapping, exceptions its filters log) in the one log format of
 * api and worker processes: a JSON object per line (libs/queue structured-log), not Nest's coloured
 * text. Nest calls `log(message, context)` and `error(message, stack, context)`; a message may also
 * be an object `{ msg, ...fields }` (what the exception filters pass, with the tenant and build ids
 * they know), whose fields are kept.
 */
export class JsonLogger implements LoggerService {
  log(message: unknown, ...rest: unknown[]): void {
    this.write('info', message, rest);
  }

  error(message: unknown, ...rest: unknown[]): void {
    this.write('error', message, rest, true);
  }

  warn(message: unknown, ...rest: unknown[]): void {
    this.write('warn', message, rest);
  }

  debug(message: unknown, ...rest: unknown[]): void {
    this.write('debug', message, rest);
  }

  verbose(message: unknown, ...rest: unknown[]): void {
    this.write('debug', message, rest);
  }

  fatal(message: unknown, ...rest: unknown[]): void {
    this.write('error', message, rest, true);
  }

  private write(level: LogLevel, message: unknown, rest: unknown[], withStack = false): void {
    // Nest's Logger passes an undefined stack when an error is logged without one.
    const params = rest.filter((p) => p !== undefined);
    // The last string is the context (the class that logged); for errors the one before it the stack.
    const context = params.length > 0 && typeof params[params.length - 1] === 'string' ? (params.pop() as string) : undefined;
    const stack = withStack && params.length > 0 && typeof params[params.length - 1] === 'string' ? (params.pop() as string) : undefined;
    const fields: LogFields = {};
    let msg: string;
    if (message instanceof Error) {
      msg = message.message;
      fields.stack = message.stack;
    } else if (message !== null && typeof message === 'object') {
      const { msg: text, message: alt, ...extra } = message as Record<string, unknown>;
      msg = String(text ?? alt ?? JSON.stringify(message));
      Object.assign(fields, extra);
    } else {
      msg = String(message);
    }
    if (context !== undefined) fields.context = context;
    if (stack !== undefined) fields.stack = stack;
    if (params.length > 0) fields.details = params.map((p) => (p instanceof Error ? p.message : p));
    logEvent(level, msg, fields);
  }
}

/** The ids a log line about a request can carry: the caller's tenant and the build its path names. */
export function requestLogFields(req: { method?: string; originalUrl?: string; url?: string; caller?: { tenantId?: string | null } }): LogFields {
  const path = (req.originalUrl ?? req.url ?? '').split('?')[0];
  const build = /^\/v1\/builds\/([0-9a-f-]{36})(?:\/|$)/i.exec(path);
  return {
    method: req.method,
    path,
    ...(req.caller?.tenantId ? { tenantId: req.caller.tenantId } : {}),
    ...(build ? { buildId: build[1] } : {}),
  };
}
