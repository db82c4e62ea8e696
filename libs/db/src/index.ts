export * from './generated/client.js';
export { PrismaService, createPrismaClient } from './prisma.service.js';
export { type Sql, poolSql, prismaSql } from './sql.js';
export { DbModule } from './db.module.js';
export * from './tokens.js';
export { isUniqueViolation, retryOnUniqueViolation } from './retry.js';
