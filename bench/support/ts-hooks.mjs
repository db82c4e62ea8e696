// ESM loader hooks that run the TypeScript sources directly (no tsc build step): `.ts` files are
// compiled by @swc/core with the same options jest uses (decorators + metadata, which Nest's
// dependency injection needs; tsx/esbuild would not emit it), `@strata/<lib>` resolves to
// libs/<lib>/src/index.ts and `./x.js` to `./x.ts` when only the .ts exists.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import swc from '@swc/core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

// The same swc options as jest (.swcrc at the repository root).
const { $schema: _schema, ...options } = JSON.parse(readFileSync(path.join(root, '.swcrc'), 'utf8'));

export async function resolve(specifier, context, next) {
  const lib = /^@strata\/([a-z-]+)$/.exec(specifier);
  if (lib) {
    const file = path.join(root, 'libs', lib[1], 'src/index.ts');
    if (existsSync(file)) return { url: pathToFileURL(file).href, format: 'module', shortCircuit: true };
  }
  if ((specifier.startsWith('.') || specifier.startsWith('/')) && specifier.endsWith('.js') && context.parentURL?.startsWith('file:')) {
    const target = new URL(specifier, context.parentURL);
    const file = fileURLToPath(target);
    if (!existsSync(file) && existsSync(file.slice(0, -3) + '.ts')) {
      return { url: pathToFileURL(file.slice(0, -3) + '.ts').href, format: 'module', shortCircuit: true };
    }
  }
  return next(specifier, context);
}

export async function load(url, context, next) {
  if (url.startsWith('file:') && url.endsWith('.ts')) {
    const file = fileURLToPath(url);
    const { code } = await swc.transform(readFileSync(file, 'utf8'), { ...options, filename: file });
    return { format: 'module', source: code, shortCircuit: true };
  }
  return next(url, context);
}
