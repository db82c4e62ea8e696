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
});
