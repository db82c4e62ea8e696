import { createHash } from 'node:crypto';
import type { Pool } from 'pg';

/**
 * One SQL statement with positional parameters ($1, $2, ...), answered as rows. The registry's
 * per-request statements go through this instead of Prisma's `$queryRaw`: Prisma's client engine
 * passes even a raw statement through its query compiler (WebAssembly), which cost about a third
 * of a millisecond of CPU per statement in a profile of a 50-layer push, more than pg itself.
 * Statements must be portable between both implementations below: cast int8 to float8 and uuid
 * to text in the select list (pg answers int8 as a string, Prisma as a bigint).
 */
export interface Sql {
  query<T>(text: string, values: readonly unknown[]): Promise<T[]>;
}

/** SQLSTATE of "cached plan must not change result type": a column a prepared statement returns changed type under it. */
const CACHED_PLAN_CHANGED = '0A000';

/**
 * Statements straight on a pg pool (the api's, shared with Prisma: see PrismaService), as named
 * prepared statements: each connection parses and plans a statement once, not on every request.
 * Postgres replans them itself after most schema changes; one it cannot (a migration that changed
 * the type of a column a statement returns, applied while this process runs) is prepared again
 * under a new name and asked once more, instead of failing on every connection until a restart.
 */
export function poolSql(pool: Pool): Sql {
  const names = new Map<string, string>();
  let generation = 0;
  const nameOf = (text: string): string => {
    let name = names.get(text);
    if (name === undefined) {
      name = `strata_${createHash('sha256').update(text).digest('hex').slice(0, 24)}${generation === 0 ? '' : `_${generation}`}`;
      names.set(text, name);
    }
    return name;
  };
  const run = async <T>(text: string, values: readonly unknown[]): Promise<T[]> =>
    (await pool.query({ name: nameOf(text), text, values: values as unknown[] })).rows as T[];
  return {
    async query<T>(text: string, values: readonly unknown[]): Promise<T[]> {
      try {
        return await run<T>(text, values);
      } catch (error) {
        if ((error as { code?: string }).code !== CACHED_PLAN_CHANGED) throw error;
        // Every statement may be stale on every connection: all get new names.
        generation++;
        names.clear();
        return run<T>(text, values);
      }
    },
  };
}

/** The same through Prisma's `$queryRawUnsafe` (a client built without a pool of its own). */
export function prismaSql(prisma: { $queryRawUnsafe<T = unknown>(query: string, ...values: unknown[]): Promise<T> }): Sql {
  return {
    query<T>(text: string, values: readonly unknown[]): Promise<T[]> {
      return prisma.$queryRawUnsafe<T[]>(text, ...values);
    },
  };
}
