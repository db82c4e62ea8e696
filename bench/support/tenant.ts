// Creates bench tenants with admin tokens, the way an operator would; prints [{ name, token }] as JSON.
// Run through the TypeScript loader: node --import ./bench/support/register-ts.mjs bench/support/tenant.ts NAME...
import { createPrismaClient, createTenantWithToken } from '@strata/db';

const url = process.env.DATABASE_URL;
if (!url) throw new Error('DATABASE_URL is not set');
const prisma = createPrismaClient(url);
try {
  const out: Array<{ name: string; token: string }> = [];
  for (const name of process.argv.slice(2)) out.push({ name, token: (await createTenantWithToken(prisma, name)).token });
  process.stdout.write(`${JSON.stringify(out)}\n`);
} finally {
  await prisma.$disconnect();
}
