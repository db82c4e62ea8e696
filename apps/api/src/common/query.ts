import { BadRequestException } from '@nestjs/common';
import { repositoryNameProblem, tagNameProblem } from '@strata/oci';

/** Express gives a repeated query parameter as an array; this always gives a list. */
export function queryList(v: unknown): string[] {
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v]).map(String);
}

export function querySingle(v: unknown, name: string): string | undefined {
  if (v === undefined) return undefined;
  if (Array.isArray(v)) throw new BadRequestException(`Query parameter "${name}" was given more than once.`);
  return String(v);
}

export function queryBool(v: unknown, name: string): boolean {
  const s = querySingle(v, name);
  if (s === undefined || s === '' || s === 'false' || s === '0') return false;
  if (s === 'true' || s === '1') return true;
  throw new BadRequestException(`Query parameter "${name}" must be true or false, got "${s}".`);
}

export function validRepositoryName(name: string | undefined, field = 'repository'): string {
  if (!name) throw new BadRequestException(`Query parameter "${field}" is required.`);
  const problem = repositoryNameProblem(name);
  if (problem) throw new BadRequestException(`Invalid ${field}: ${problem}.`);
  return name;
}

export function validTag(tag: string): string {
  const problem = tagNameProblem(tag);
  if (problem) throw new BadRequestException(`Invalid tag: ${problem}.`);
  return tag;
}

/** `buildArg=NAME=VALUE` query parameters as a record. */
export function parseBuildArgs(raw: string[]): Record<string, string> {
  const args: Record<string, string> = {};
  for (const item of raw) {
    const eq = item.indexOf('=');
    const key = eq < 0 ? item : item.slice(0, eq);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new BadRequestException(`Invalid buildArg "${item}": expected NAME=VALUE.`);
    if (eq < 0) throw new BadRequestException(`Invalid buildArg "${item}": expected NAME=VALUE.`);
    args[key] = item.slice(eq + 1);
  }
  return args;
}
