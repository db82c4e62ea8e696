// Lint rules that keep the layout honest (docs/architecture.md, "Projects and what each owns"): arrows point
// down the table, a lib never imports an app, and pure libs never import I/O.
import tseslint from 'typescript-eslint';

const LIBS = ['dockerfile', 'oci', 'config', 'queue', 'db', 'blobstore', 'build-engine', 'registry', 'runtime', 'egress', 'native'];
/** Which of our libs each project may import. */
const ALLOWED = {
  'libs/dockerfile': [],
  'libs/oci': [],
  'libs/config': [],
  // Queue names, the log writer and the reconciler, shared by the api and the worker.
  'libs/queue': ['config', 'db', 'blobstore', 'oci', 'build-engine'],
  // Where tenant-given URLs may go: DNS and sockets, nothing of ours.
  'libs/egress': [],
  // Syscalls Node has no API for (mount, xattrs, mknod): a leaf, nothing of ours.
  'libs/native': [],
  'libs/db': ['config'],
  'libs/blobstore': ['oci'],
  'libs/build-engine': ['dockerfile', 'oci', 'blobstore'],
  'libs/registry': ['oci', 'blobstore', 'db'],
  'libs/runtime': ['oci', 'build-engine', 'native'],
  'apps/api': LIBS,
  'apps/worker': LIBS,
  // The CLI and the web console talk to the api over HTTP only.
  'apps/cli': [],
  'apps/console': [],
};
const NODE_IO = ['fs', 'fs/promises', 'net', 'http', 'https', 'child_process', 'dgram', 'dns', 'tls', 'cluster', 'worker_threads'];
const PURE = ['libs/dockerfile'];

function rulesFor(project) {
  const forbiddenLibs = LIBS.filter((l) => !ALLOWED[project].includes(l) && `libs/${l}` !== project);
  const patterns = [
    { group: forbiddenLibs.map((l) => `@strata/${l}`), message: `${project} may not import this lib: see the dependency table in docs/architecture.md.` },
    { group: ['@strata/api', '@strata/worker', '**/apps/**'], message: 'Apps are leaves: nothing imports an app.' },
    { group: ['../../libs/**', '../../../libs/**', '**/libs/*/src/**'], message: 'Import a lib by its package name (@strata/<lib>), not by path.' },
    // The console is a browser bundle: nothing of the server side, by any path.
    ...(project === 'apps/console' ? [{ group: ['@strata/*', '**/libs/**', '**/apps/*/src/**'], message: 'apps/console talks to the api over HTTP only: no server code in the browser bundle.' }] : []),
  ].filter((p) => p.group.length > 0);
  const paths = PURE.includes(project)
    ? NODE_IO.flatMap((m) => [m, `node:${m}`]).map((name) => ({ name, message: `${project} is pure: no I/O modules.` }))
    : [];
  return { 'no-restricted-imports': ['error', { patterns, paths }] };
}

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', 'libs/db/src/generated/**', '.strata/**', 'coverage/**', '.nx/**'] },
  {
    files: ['**/*.ts', '**/*.tsx'],
    languageOptions: { parser: tseslint.parser, ecmaVersion: 2023, sourceType: 'module', parserOptions: { ecmaFeatures: { jsx: true } } },
  },
  ...Object.keys(ALLOWED).map((project) => ({
    files: [`${project}/src/**/*.ts`, `${project}/src/**/*.tsx`],
    ignores: [`${project}/src/**/*.spec.ts`],
    rules: rulesFor(project),
  })),
);
