import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';

// The layout's dependency rules are enforced by eslint.config.js; this checks the rule bites.
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

async function lint(file: string, code: string): Promise<string[]> {
  const eslint = new ESLint({ cwd: root });
  const [result] = await eslint.lintText(code, { filePath: path.join(root, file) });
  return result.messages.map((m) => m.message);
}

describe('dependency direction lint', () => {
  it('refuses I/O and other libs in the pure Dockerfile lib', async () => {
    const messages = await lint('libs/dockerfile/src/x.ts', "import { readFileSync } from 'node:fs';\nimport { PrismaService } from '@strata/db';\nexport const x = [readFileSync, PrismaService];\n");
    expect(messages).toEqual([
      expect.stringContaining('libs/dockerfile is pure: no I/O modules'),
      expect.stringContaining('libs/dockerfile may not import this lib'),
    ]);
  });

  it('refuses a lib importing an app, and allows what the table allows', async () => {
    expect(await lint('libs/oci/src/x.ts', "import { startWorker } from '@strata/worker';\nexport const x = startWorker;\n")).toEqual([
      expect.stringContaining('nothing imports an app'),
    ]);
    expect(await lint('libs/build-engine/src/x.ts', "import { parseDockerfile } from '@strata/dockerfile';\nexport const x = parseDockerfile;\n")).toEqual([]);
    expect(await lint('apps/cli/src/x.ts', "import { loadConfig } from '@strata/config';\nexport const x = loadConfig;\n")).toEqual([
      expect.stringContaining('apps/cli may not import this lib'),
    ]);
  });

  it('keeps server code out of the console, by package name or by path', async () => {
    const byName = await lint('apps/console/src/pages/x.tsx', "import { parseDockerfile } from '@strata/dockerfile';\nexport const x = () => <b>{String(parseDockerfile)}</b>;\n");
    expect(byName).toEqual(expect.arrayContaining([expect.stringContaining('apps/console')]));
    const byPath = await lint('apps/console/src/x.ts', "import { toBuildView } from '../../../libs/db/src/index';\nexport const x = toBuildView;\n");
    expect(byPath).toEqual(expect.arrayContaining([expect.stringContaining('apps/console talks to the api over HTTP only')]));
    expect(await lint('apps/console/src/x.tsx', "import { useState } from 'react';\nexport const X = () => <b>{String(useState)}</b>;\n")).toEqual([]);
  });
});
