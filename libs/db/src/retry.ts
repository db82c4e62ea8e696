/** Whether `e` is a lost race on a unique constraint (Prisma P2002, or the driver's own message). */
export function isUniqueViolation(e: unknown): boolean {
  const code = (e as { code?: string }).code;
  return code === 'P2002' || /Unique constraint|duplicate key value/i.test((e as Error).message ?? '');
}

/**
 * Runs `fn` again when it loses a race on a unique constraint (Prisma P2002): two builds creating
 * the same repository, two imports recording the same blob. The second attempt finds the row the
 * winner wrote. A transaction is retried as a whole, since Postgres aborts it on the violation.
 */
export async function retryOnUniqueViolation<T>(fn: () => Promise<T>, attempts = 3): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (!isUniqueViolation(e) || i >= attempts) throw e;
    }
  }
}
