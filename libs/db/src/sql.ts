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

/**
 * Statements straight on a pg pool (the api's, shared with Prisma: see PrismaService), as named
 * prepared statements: each connection parses and plans a statement once, not on every request.
 */
export function poolSql(pool: Pool): Sql {
  const names = new Map<string, string>();
  const nameOf = (text: string): string => {
    let name = names.get(text);
    if (name === undefined) {
      name = `strata_${createHash('sha256').update(text).digest('hex').slice(0, 24)}`;
      names.set(text, name);
    }
    return name;
  };
  return {
    async query<T>(text: string, values: readonly unknown[]): Promise<T[]> {
      return (await pool.query({ name: nameOf(text), text, values: values as unknown[] })).rows as T[];
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
