import { BadRequestException } from '@nestjs/common';

/** Opaque cursors for newest-first paging: the (createdAt, id) of the last item of a page. */
export function encodeCursor(createdAt: Date, id: string): string {
  return Buffer.from(`${createdAt.toISOString()}|${id}`).toString('base64url');
}

export function decodeCursor(cursor: string): { createdAt: Date; id: string } {
  const [iso, id] = Buffer.from(cursor, 'base64url').toString('utf8').split('|');
  const createdAt = new Date(iso ?? '');
  if (!id || Number.isNaN(createdAt.getTime()) || !/^[0-9a-f-]{36}$/.test(id)) {
    throw new BadRequestException('Query parameter "cursor" is not a cursor this API returned.');
  }
  return { createdAt, id };
}
