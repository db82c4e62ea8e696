export * from './generated/client.js';
export { PrismaService, createPrismaClient } from './prisma.service.js';
export { DbModule } from './db.module.js';
export * from './tokens.js';
export { isUniqueViolation, retryOnUniqueViolation } from './retry.js';
