import type { Prisma } from '@strata/db';

/**
 * The builds a token limited to repository patterns may see: those of a repository a pattern allows
 * (as repositoryAllowed decides: a name, or a prefix before a final `*`). Empty patterns: every build
 * of the tenant. The others answer 404 like another tenant's, so a limited token cannot tell them apart.
 */
export function buildsVisibleTo(patterns: readonly string[]): Prisma.BuildWhereInput {
  if (patterns.length === 0) return {};
  return { repository: { OR: patterns.map((p) => (p.endsWith('*') ? { name: { startsWith: p.slice(0, -1) } } : { name: p })) } };
}
