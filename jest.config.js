// One jest run for every unit test (libs/, apps/) and end-to-end test (test/).
// ESM throughout: NestJS 12 is ESM-only, so jest runs with --experimental-vm-modules.
import { readFileSync } from 'node:fs';

// One set of swc options (.swcrc) for jest and the benchmarks' TypeScript loader.
const { $schema: _schema, ...swcOptions } = JSON.parse(readFileSync(new URL('./.swcrc', import.meta.url), 'utf8'));
const swc = ['@swc/jest', swcOptions];

const common = {
  extensionsToTreatAsEsm: ['.ts'],
  transform: { '^.+\\.ts$': swc },
  moduleNameMapper: {
    '^@strata/([a-z-]+)$': '<rootDir>/libs/$1/src/index.ts',
    '^(\\.{1,2}/.*)\\.js$': '$1',
  },
  testEnvironment: 'node',
};

export default {
  // Keep-alive sockets of HTTP clients (fetch, the S3 SDK) can outlive a suite by seconds; never hang CI on them.
  forceExit: true,
  // A global option in jest 30: set on a project it is ignored, and every e2e test got 5 s.
  testTimeout: 120000,
  projects: [
    // Pure unit tests: no root, runc or service (`npm run test:unit` runs only these).
    { ...common, displayName: 'unit', rootDir: '.', testMatch: ['<rootDir>/{libs,apps}/*/src/**/*.spec.ts'], testPathIgnorePatterns: ['\\.integration\\.spec\\.ts$'] },
    // A lib's own tests that need root (runc, overlayfs, network namespaces) or a service (Redis, an S3 server).
    { ...common, displayName: 'integration', rootDir: '.', testMatch: ['<rootDir>/{libs,apps}/*/src/**/*.integration.spec.ts'] },
    { ...common, displayName: 'e2e', rootDir: '.', testMatch: ['<rootDir>/test/**/*.e2e.spec.ts'] },
  ],
};
