// The differential suite (issue 11): every case in cases.ts is built by Strata and by BuildKit
// (dockerd 20.10 from Debian, started by test/support/dockerd.ts) from the same imported base, and
// the two images are compared as file trees and run configs (support/image-tree.ts). A case must
// give the same image, or be named in known-differences.ts with the exact difference still seen.
// Builds run one case ahead of the comparison, so both sides build while the previous case is compared.
import { jest } from '@jest/globals';
import { appendFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { debianBaseTar } from '../../bench/support/debian-base.mjs';
import { DOCKER, type Dockerd, run, startDockerd } from '../support/dockerd.js';
import { busyboxRootfs } from '../support/images.js';
import { api, type Stack, startStack, tarOf, waitForBuild } from '../support/stack.js';
import { type BaseImage, CASES, type DiffCase } from './cases.js';
import { KNOWN_DIFFERENCES } from './known-differences.js';
import { ContextWriter } from './support/context.js';
import { compareImages, type ImageView, viewOfDockerSave, viewOfOciArchive } from './support/image-tree.js';

jest.setTimeout(10 * 60_000);

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** Differences shown when a case fails; the rest are counted. */
const SHOWN = 40;
/** A file to append each case's observed differences to (JSON lines), to review when updating known-differences.ts. */
const RECORD = process.env.STRATA_DIFF_RECORD;

type SideResult = { ok: true; view: ImageView } | { ok: false; failure: string };

describe('differential: Strata against BuildKit (dockerd 20.10) on the same base', () => {
  let stack: Stack;
  let tenant: { token: string };
  let dockerd: Dockerd;
  const cleanups: string[] = [];
  const imported = new Map<BaseImage, Promise<void>>();
  const built = new Map<string, Promise<{ strata: SideResult; docker: SideResult }>>();

  // What ADD <url> cases download, with a fixed Last-Modified (BuildKit uses it as the file's mtime).
  let files: Server;
  let httpBase: string;
  const served: Record<string, Buffer> = { '/files/hello.txt': Buffer.from('hello from the suite\n') };

  beforeAll(async () => {
    const made = ContextWriter.fresh().archive('archive.tar', (a) => a.file('inside.txt', 'inside\n'));
    served['/files/archive.tar'] = readFileSync(path.join(made.root, 'archive.tar'));
    rmSync(made.root, { recursive: true, force: true });
    files = createServer((req, res) => {
      const body = served[req.url ?? ''];
      if (!body) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-length': body.length, 'last-modified': 'Wed, 21 Oct 2015 07:28:00 GMT' }).end(body);
    });
    await new Promise<void>((resolve) => files.listen(0, '127.0.0.1', resolve));
    httpBase = `http://127.0.0.1:${(files.address() as AddressInfo).port}`;
    [stack, dockerd] = await Promise.all([startStack(), startDockerd('sdf-')]);
    tenant = await stack.tenant('diff');
  });

  afterAll(async () => {
    // A build started ahead for a case that was filtered out still finishes before dockerd stops.
    await Promise.allSettled([...built.values()]);
    await dockerd?.stop();
    await stack?.close();
    await new Promise((resolve) => files?.close(resolve));
    for (const p of cleanups) rmSync(p, { recursive: true, force: true });
  });

  /** The same rootfs tar imported on both sides: `docker import` and POST /v1/repositories/{name}/import. */
  function importBase(base: BaseImage): Promise<void> {
    let done = imported.get(base);
    if (!done) {
      done = (async () => {
        const [repo, tag] = base === 'busybox' ? ['busybox', '1'] : ['debian', 'minbase'];
        let tar: string;
        if (base === 'busybox') {
          const rootfs = busyboxRootfs();
          cleanups.push(rootfs);
          // As every busybox image has them: a RUN on a tree without them is its own case (run-on-bare-rootfs).
          for (const d of ['dev', 'proc', 'sys']) mkdirSync(path.join(rootfs, d));
          tar = path.join(dockerd.work, 'busybox.tar');
          writeFileSync(tar, tarOf(rootfs));
        } else {
          // debootstrap minbase bookworm, cached under .strata/bench like the benchmarks' base.
          tar = debianBaseTar(path.join(REPO_ROOT, '.strata/bench')).tar;
        }
        const [res] = await Promise.all([
          api(stack, tenant.token, 'POST', `/v1/repositories/${repo}/import?tag=${tag}`, await readFile(tar), 'application/x-tar'),
          dockerd.docker('import', tar, `${repo}:${tag}`),
        ]);
        if (res.status !== 201) throw new Error(`importing ${repo}:${tag} into Strata answered ${res.status}: ${res.text}`);
      })();
      imported.set(base, done);
    }
    return done;
  }

  async function buildWithStrata(c: DiffCase, context: Buffer): Promise<SideResult> {
    const query = new URLSearchParams({ repository: `diff/${c.name}`, tag: '1' });
    for (const [k, v] of Object.entries(c.buildArgs ?? {})) query.append('buildArg', `${k}=${v}`);
    if (c.target) query.set('target', c.target);
    const headers = new Headers({ authorization: `Bearer ${tenant.token}`, 'content-type': 'application/x-tar' });
    for (const [id, value] of Object.entries(c.secrets ?? {})) headers.append('strata-build-secret', `id=${id},src=${Buffer.from(value).toString('base64')}`);
    const res = await fetch(`${stack.url}/v1/builds?${query}`, { method: 'POST', headers, body: context });
    if (res.status !== 202) throw new Error(`Strata refused the build of ${c.name}: ${res.status} ${await res.text()}`);
    const { id } = (await res.json()) as { id: string };
    const done = await waitForBuild(stack, tenant.token, id, 5 * 60_000);
    if (done.status !== 'succeeded') {
      // The worker's data dir, snapshot ids and the file server's port differ from run to run; what failed does not.
      const message = String(done.error?.message ?? done.status)
        .split(stack.config.dataDir)
        .join('<worker-data>')
        .replaceAll(httpBase, '{{HTTP}}')
        .replace(/\/snapshots\/[0-9a-f]+\//g, '/snapshots/<id>/');
      return { ok: false, failure: `strata build failed: ${done.error?.line ? `line ${done.error.line}: ` : ''}${message}` };
    }
    const archive = await fetch(`${stack.url}/v1/repositories/diff/${c.name}/tags/1/oci-archive`, { headers: { authorization: `Bearer ${tenant.token}` } });
    if (archive.status !== 200) throw new Error(`oci-archive of diff/${c.name}:1 answered ${archive.status}: ${await archive.text()}`);
    return { ok: true, view: await viewOfOciArchive(Buffer.from(await archive.arrayBuffer())) };
  }

  async function buildWithDocker(c: DiffCase, ctxDir: string): Promise<SideResult> {
    const ref = `diff-${c.name}:1`;
    const args = ['build', '--network', 'none', '-t', ref];
    for (const [k, v] of Object.entries(c.buildArgs ?? {})) args.push('--build-arg', `${k}=${v}`);
    if (c.target) args.push('--target', c.target);
    for (const [id, value] of Object.entries(c.secrets ?? {})) {
      const file = path.join(dockerd.work, `${c.name}-secret-${id}`);
      writeFileSync(file, value);
      args.push('--secret', `id=${id},src=${file}`);
    }
    // BuildKit must build every case: one it refuses is a broken case, not a difference.
    await run(DOCKER, [...args, ctxDir], { ...dockerd.env, DOCKER_BUILDKIT: '1' });
    const saved = path.join(dockerd.work, `${c.name}.tar`);
    await dockerd.docker('save', '-o', saved, ref);
    try {
      const [inspected] = JSON.parse(await dockerd.docker('image', 'inspect', ref));
      return { ok: true, view: await viewOfDockerSave(saved, inspected) };
    } finally {
      rmSync(saved, { force: true });
    }
  }

  function buildBoth(c: DiffCase): Promise<{ strata: SideResult; docker: SideResult }> {
    let both = built.get(c.name);
    if (!both) {
      both = (async () => {
        const ctx = ContextWriter.fresh();
        cleanups.push(ctx.root);
        ctx.file('Dockerfile', c.dockerfile.replaceAll('{{HTTP}}', httpBase));
        c.context?.(ctx);
        await importBase(c.base);
        const [strata, docker] = await Promise.all([buildWithStrata(c, tarOf(ctx.root)), buildWithDocker(c, ctx.root)]);
        return { strata, docker };
      })();
      // Kept for its own test to await; a failure is reported there, not as an unhandled rejection.
      both.catch(() => undefined);
      built.set(c.name, both);
    }
    return both;
  }

  it('has at least 40 cases with distinct names, and every known difference names a case', () => {
    const names = CASES.map((c) => c.name);
    expect(names.length).toBeGreaterThanOrEqual(40);
    expect(new Set(names).size).toBe(names.length);
    for (const name of names) expect(name).toMatch(/^[a-z0-9][a-z0-9-]*$/);
    expect(Object.keys(KNOWN_DIFFERENCES).filter((n) => !names.includes(n))).toEqual([]);
  });

  CASES.forEach((c, i) => {
    it(`${c.name}: ${c.covers}`, async () => {
      const next = CASES[i + 1];
      const mine = buildBoth(c);
      if (next) void buildBoth(next);
      const { strata, docker } = await mine;
      if (!docker.ok) throw new Error(`BuildKit failed to build ${c.name}: ${docker.failure}`);
      const differences = strata.ok ? compareImages(strata.view, docker.view) : [strata.failure];
      if (RECORD) appendFileSync(RECORD, `${JSON.stringify({ case: c.name, observed: differences })}\n`);
      const known = KNOWN_DIFFERENCES[c.name];
      if (known === undefined) {
        if (differences.length > 0) {
          const shown = differences.slice(0, SHOWN).join('\n  ');
          const more = differences.length > SHOWN ? `\n  … and ${differences.length - SHOWN} more` : '';
          throw new Error(`${c.name}: Strata's image differs from BuildKit's in ${differences.length} place(s):\n  ${shown}${more}`);
        }
        return;
      }
      if (differences.length === 0) {
        throw new Error(`${c.name} now gives the same image as BuildKit: delete its entry from test/differential/known-differences.ts and its line in docs/differential.md`);
      }
      expect(differences).toEqual(known.observed);
    });
  });
});
