import pg from 'pg';
import { poolSql } from './sql.js';

// Against the test PostgreSQL (DATABASE_URL, as `npm test` starts it).
describe('poolSql', () => {
  const table = `strata_sql_spec_${process.pid}`;
  let pool: pg.Pool;
  beforeAll(async () => {
    // One connection: the statement prepared by the first query is the one the second one finds.
    pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 1 });
    await pool.query(`CREATE TABLE "${table}" (id int PRIMARY KEY, size int)`);
    await pool.query(`INSERT INTO "${table}" VALUES (1, 42)`);
  });
  afterAll(async () => {
    await pool.query(`DROP TABLE IF EXISTS "${table}"`);
    await pool.end();
  });

  it('answers a prepared statement again after a migration changed the type of a column it returns', async () => {
    const sql = poolSql(pool);
    const statement = `SELECT size FROM "${table}" WHERE id = $1`;
    expect(await sql.query(statement, [1])).toEqual([{ size: 42 }]);
    // What a migration applied while the api runs does (the statement is prepared on this connection).
    await pool.query(`ALTER TABLE "${table}" ALTER COLUMN size TYPE bigint`);
    // pg answers int8 as a string.
    expect(await sql.query(statement, [1])).toEqual([{ size: '42' }]);
    expect(await sql.query(statement, [1])).toEqual([{ size: '42' }]);
  });

  it('still fails a statement that is wrong', async () => {
    const sql = poolSql(pool);
    await expect(sql.query(`SELECT missing FROM "${table}"`, [])).rejects.toThrow(/column "missing" does not exist/);
  });
});
