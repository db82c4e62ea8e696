import { Inject, Injectable, type OnModuleDestroy } from '@nestjs/common';
import { PrismaPg } from '@prisma/adapter-pg';
import { STRATA_CONFIG, type StrataConfig } from '@strata/config';
import pg from 'pg';
import { PrismaClient } from './generated/client.js';
import { poolSql, type Sql } from './sql.js';

/**
 * The Prisma client as a Nest provider, on the pure-JS engine with the pg driver adapter (no native
 * binary). Its pg pool is made here and shared with `sql`, for the hot statements that skip Prisma.
 */
@Injectable()
export class PrismaService extends PrismaClient implements OnModuleDestroy {
  /** Raw statements on the same pool (and connections) as Prisma's. */
  readonly sql: Sql;
  private readonly pool: pg.Pool;

  constructor(@Inject(STRATA_CONFIG) config: StrataConfig) {
    const pool = new pg.Pool({ connectionString: config.databaseUrl, max: 10 });
    super({ adapter: new PrismaPg(pool, { disposeExternalPool: true }) });
    this.pool = pool;
    this.sql = poolSql(pool);
  }

  async onModuleDestroy(): Promise<void> {
    await this.$disconnect();
    // Prisma ends the pool only if it ever connected; `sql` may have used it on its own.
    if (!this.pool.ended && !this.pool.ending) await this.pool.end();
  }
}

export function createPrismaClient(databaseUrl: string): PrismaClient {
  return new PrismaClient({ adapter: new PrismaPg({ connectionString: databaseUrl, max: 5 }) });
}
