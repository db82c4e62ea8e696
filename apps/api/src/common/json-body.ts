import { BadRequestException } from '@nestjs/common';
import type { Readable } from 'node:stream';
import { readSmallBody } from './body.js';

/** A small JSON object body (the api parses no bodies globally); 400 naming what is wrong otherwise. */
export async function readJsonObject(req: Readable, what: string, limit = 64 * 1024): Promise<Record<string, unknown>> {
  const raw = await readSmallBody(req, limit, what);
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new BadRequestException(`The ${what} must be a JSON object; it is not valid JSON.`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new BadRequestException(`The ${what} must be a JSON object.`);
  return parsed as Record<string, unknown>;
}
