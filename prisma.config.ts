// Prisma CLI configuration. Prisma 6's bundled WASM schema engine works offline; migrations run
// through the v7 pg adapter (aliased) because v6's fails to read `name` columns (STACK-NOTES.md).
import path from 'node:path';
import { defineConfig } from 'prisma/config';
import { PrismaPg } from 'prisma-adapter-pg-7';

export default defineConfig({
  schema: path.join('prisma', 'schema.prisma'),
  migrations: { path: path.join('prisma', 'migrations') },
  experimental: { adapter: true },
  engine: 'js',
  adapter: async () => new PrismaPg({ connectionString: process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:54329/strata' }),
});
