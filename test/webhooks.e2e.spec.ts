import { jest } from '@jest/globals';
import { execFileSync, spawn } from 'node:child_process';
import { createHmac, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { run as runCli } from '../apps/cli/src/cli.js';
import { type ForgeRecorder, startForgeRecorder } from './support/forge-recorder.js';
import { type GitServer, startGitServer, WorkingCopy } from './support/git-server.js';
import { AUTHOR, type Change, githubPush, hmacHex, ZERO } from './support/github-hooks.js';
import { api, type Stack, startStack, waitForBuild } from './support/stack.js';
import { envOf } from './support/worker-process.js';

jest.setTimeout(120_000);

/** The files of every commit pushed here: .dockerignore keeps secret.txt out of the image. */
function project(version: string, extra: Record<string, string | null> = {}): Record<string, string | null> {
  return {
    Dockerfile: 'FROM scratch\nCOPY . /src/\n',
    '.dockerignore': 'secret.txt\n',
    'secret.txt': 'not for the image\n',
    'version.txt': `${version}\n`,
    ...extra,
  };
}

/** A push as GitLab sends it (object_kind push or tag_push). */
function gitlabPush(o: { ref: string; after: string; message?: string; files?: Change; projectId?: number }) {
  const tag = o.ref.startsWith('refs/tags/');
  return {
    object_kind: tag ? 'tag_push' : 'push',
    event_name: tag ? 'tag_push' : 'push',
    before: ZERO,
    after: o.after,
    ref: o.ref,
    checkout_sha: o.after,
    user_username: 'ada',
    project_id: o.projectId ?? 42,
    project: { id: o.projectId ?? 42, name: 'app', path_with_namespace: 'acme/app', git_http_url: 'https://gitlab.example/acme/app.git' },
    commits: [
      {
        id: o.after,
        message: o.message ?? 'a change',
        title: o.message ?? 'a change',
        timestamp: '2026-11-30T12:00:00+00:00',
        url: `https://gitlab.example/acme/app/-/commit/${o.after}`,
        author: { name: AUTHOR.name, email: AUTHOR.email },
        added: o.files?.added ?? [],
        modified: o.files?.modified ?? ['version.txt'],
        removed: o.files?.removed ?? [],
      },
    ],
    total_commits_count: 1,
    repository: { name: 'app', homepage: 'https://gitlab.example/acme/app' },
  };
}

/** A push as Bitbucket Cloud sends it (repo:push with push.changes). */
function bitbucketPush(o: { branch: string; sha: string; message?: string }) {
  const target = { type: 'commit', hash: o.sha, message: `${o.message ?? 'a change'}\n`, author: { raw: `${AUTHOR.name} <${AUTHOR.email}>`, type: 'author' }, date: '2026-11-30T12:00:00+00:00' };
  return {
    push: { changes: [{ new: { type: 'branch', name: o.branch, target }, old: null, created: true, forced: false, closed: false, commits: [target], truncated: false }] },
    repository: { type: 'repository', full_name: 'acme/app', name: 'app', uuid: '{a-b-c}' },
    actor: { display_name: AUTHOR.name },
  };
}


describe('builds on git push', () => {
  let stack: Stack;
  let token: string;
  let git: GitServer;
  let forge: ForgeRecorder;

  beforeAll(async () => {
    stack = await startStack();
    ({ token } = await stack.tenant('hooks'));
    git = await startGitServer();
    forge = await startForgeRecorder();
  });
  afterAll(async () => {
    await forge?.close();
    await git?.close();
    await stack?.close();
  });

  async function createTrigger(body: Record<string, unknown>) {
    const res = await api(stack, token, 'POST', '/v1/triggers', JSON.stringify(body), 'application/json');
    if (res.status !== 201) throw new Error(`creating the trigger answered ${res.status}: ${res.text}`);
    return res.json as { id: string; hookUrl: string };
  }

  async function hook(hookUrl: string, headers: Record<string, string>, body: string) {
    const res = await fetch(`${stack.url}${hookUrl}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
    return { status: res.status, json: (await res.json()) as any };
  }

  /** A GitHub delivery, signed with `secret` (X-Hub-Signature-256). */
  function github(hookUrl: string, secret: string, event: string, payload: unknown, deliveryId = randomUUID()) {
    const body = JSON.stringify(payload);
    return hook(hookUrl, { 'x-github-event': event, 'x-github-delivery': deliveryId, 'x-hub-signature-256': `sha256=${hmacHex(secret, body)}`, 'user-agent': 'GitHub-Hookshot/1' }, body);
  }

  async function deliveries(triggerId: string) {
    const res = await api(stack, token, 'GET', `/v1/triggers/${triggerId}/deliveries`);
    expect(res.status).toBe(200);
    return res.json.deliveries as any[];
  }

  /** The image's root filesystem, unpacked with umoci from the oci-archive a user downloads. */
  async function imageRoot(repository: string, tag: string): Promise<string> {
    const res = await fetch(`${stack.url}/v1/repositories/${repository}/tags/${tag}/oci-archive`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    const work = mkdtempSync(path.join(tmpdir(), 'strata-oci-'));
    writeFileSync(path.join(work, 'i.tar'), Buffer.from(await res.arrayBuffer()));
    execFileSync('mkdir', ['-p', `${work}/l`]);
    execFileSync('tar', ['-xf', `${work}/i.tar`, '-C', `${work}/l`]);
    execFileSync('umoci', ['unpack', '--image', `${work}/l:${tag}`, `${work}/b`], { stdio: 'pipe' });
    return `${work}/b/rootfs`;
  }

  it('builds the pushed commit of a GitHub push, tags it from the templates, records its source and reports statuses', async () => {
    git.createRepo('app');
    const work = new WorkingCopy(git.pushUrl('app'));
    const sha = work.commit(project('one'), 'first version');
    await work.push('main');
    const secret = 'github-secret-1';
    const trigger = await createTrigger({
      repository: 'app',
      provider: 'github',
      cloneUrl: git.url('app'),
      apiUrl: `${forge.url}/gh`,
      secret,
      credentials: { token: 'forge-api-token' },
      rules: [{ ref: '^refs/heads/(main|release/.+)$', tags: ['{branch}', 'sha-{short_sha}', 'b-{1}'] }],
    });
    expect(trigger.hookUrl).toBe(`/v1/hooks/${trigger.id}`);
    const deliveryId = randomUUID();
    const res = await github(trigger.hookUrl, secret, 'push', githubPush({ ref: 'refs/heads/main', after: sha, message: 'first version' }), deliveryId);
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ deliveryId, outcome: 'build', reason: null });
    const built = await waitForBuild(stack, token, res.json.buildId);
    expect(built.status).toBe('succeeded');
    expect(built.tags).toEqual(['main', `sha-${sha.slice(0, 7)}`, 'b-main']);
    expect(built.source).toEqual({
      type: 'git',
      provider: 'github',
      cloneUrl: git.url('app'),
      ref: 'refs/heads/main',
      sha,
      message: 'first version',
      author: 'Ada Lovelace <ada@example.com>',
      deliveryId,
      triggerId: trigger.id,
    });
    const root = await imageRoot('app', `sha-${sha.slice(0, 7)}`);
    expect(readFileSync(`${root}/src/version.txt`, 'utf8')).toBe('one\n');
    expect(() => statSync(`${root}/src/secret.txt`)).toThrow();
    expect(() => statSync(`${root}/src/.git`)).toThrow();

    const bySha = await api(stack, token, 'GET', `/v1/builds?sha=${sha}`);
    expect(bySha.json.builds.map((b: any) => b.id)).toEqual([built.id]);
    expect((await api(stack, token, 'GET', `/v1/builds?sha=${sha.slice(0, 7)}`)).json.builds.map((b: any) => b.id)).toEqual([built.id]);

    const statuses = await forge.waitFor(`/gh/repos/acme/app/statuses/${sha}`, 2);
    expect(statuses.map((s) => s.body.state)).toEqual(['pending', 'success']);
    for (const s of statuses) {
      expect(s.method).toBe('POST');
      expect(s.headers.authorization).toBe('Bearer forge-api-token');
      expect(s.body).toMatchObject({ context: 'strata/app', target_url: `${stack.url}/builds/${built.id}` });
    }
    const [d] = await deliveries(trigger.id);
    expect(d).toMatchObject({ deliveryId, event: 'push', ref: 'refs/heads/main', sha, outcome: 'build', buildId: built.id });
    expect(d.statusReports.map((r: any) => [r.state, r.ok])).toEqual([
      ['pending', true],
      ['success', true],
    ]);
    work.close();
  });

  it('reports failure to GitHub when the build of a pushed commit fails, naming the Dockerfile line', async () => {
    git.createRepo('broken');
    const work = new WorkingCopy(git.pushUrl('broken'));
    const sha = work.commit({ Dockerfile: 'FROM scratch\nCOPY missing.txt /\n' }, 'broken');
    await work.push('main');
    const secret = 'broken-secret-1';
    const trigger = await createTrigger({ repository: 'broken', provider: 'github', cloneUrl: git.url('broken'), apiUrl: `${forge.url}/gh-broken`, secret, credentials: { token: 't' }, rules: [{ ref: '.*', tags: ['latest'] }] });
    const res = await github(trigger.hookUrl, secret, 'push', githubPush({ ref: 'refs/heads/main', after: sha, message: 'broken' }));
    const failed = await waitForBuild(stack, token, res.json.buildId);
    expect([failed.status, failed.error.line]).toEqual(['failed', 2]);
    const statuses = await forge.waitFor(`/gh-broken/repos/acme/app/statuses/${sha}`, 2);
    expect(statuses.map((s) => [s.body.state, s.body.description])).toEqual([
      ['pending', 'Strata is building the image'],
      ['failure', 'The build failed'],
    ]);
    work.close();
  });

  it('builds a tag push from Gitea with the tag and capture groups in the tags, and reports Gitea statuses', async () => {
    git.createRepo('tagged');
    const work = new WorkingCopy(git.pushUrl('tagged'));
    const sha = work.commit(project('1.2.3'), 'release 1.2.3');
    await work.push('main');
    work.git('tag', '-a', 'v1.2.3', '-m', 'v1.2.3');
    await work.push('refs/tags/v1.2.3');
    const secret = 'gitea-secret-1';
    const trigger = await createTrigger({
      repository: 'tagged',
      provider: 'gitea',
      cloneUrl: git.url('tagged'),
      apiUrl: `${forge.url}/gitea/api/v1`,
      secret,
      credentials: { token: 'gitea-token' },
      rules: [
        { ref: '^refs/heads/main$', tags: ['edge'] },
        { ref: '^refs/tags/v(\\d+)\\.(\\d+)\\.\\d+$', tags: ['{tag}', '{1}.{2}'] },
      ],
    });
    const body = JSON.stringify(githubPush({ ref: 'refs/tags/v1.2.3', after: sha, message: 'release 1.2.3', repo: 'acme/tagged' }));
    const res = await hook(trigger.hookUrl, { 'x-gitea-event': 'push', 'x-github-event': 'push', 'x-gitea-delivery': randomUUID(), 'x-gitea-signature': hmacHex(secret, body) }, body);
    expect(res.json.outcome).toBe('build');
    const built = await waitForBuild(stack, token, res.json.buildId);
    expect([built.status, built.tags, built.source.ref, built.source.sha]).toEqual(['succeeded', ['v1.2.3', '1.2'], 'refs/tags/v1.2.3', sha]);
    expect(readFileSync(`${await imageRoot('tagged', '1.2')}/src/version.txt`, 'utf8')).toBe('1.2.3\n');
    const statuses = await forge.waitFor(`/gitea/api/v1/repos/acme/tagged/statuses/${sha}`, 2);
    expect(statuses.map((s) => [s.body.state, s.headers.authorization, s.body.context])).toEqual([
      ['pending', 'token gitea-token', 'strata/tagged'],
      ['success', 'token gitea-token', 'strata/tagged'],
    ]);
    work.close();
  });

  it('answers 401 to an unsigned or badly signed delivery and stores nothing', async () => {
    const secret = 'the-right-secret';
    const trigger = await createTrigger({ repository: 'unsigned', provider: 'github', cloneUrl: git.url('app'), secret, rules: [{ ref: '.*', tags: ['latest'] }] });
    const before = (await api(stack, token, 'GET', '/v1/builds?limit=100')).json.builds.length;
    const payload = JSON.stringify(githubPush({ ref: 'refs/heads/main', after: 'a'.repeat(40) }));
    const wrong = await hook(trigger.hookUrl, { 'x-github-event': 'push', 'x-github-delivery': randomUUID(), 'x-hub-signature-256': `sha256=${hmacHex('not-the-secret', payload)}` }, payload);
    expect(wrong.status).toBe(401);
    expect(wrong.json).toEqual({ statusCode: 401, error: 'Unauthorized', message: "The webhook request is not signed with this trigger's secret: X-Hub-Signature-256 does not match the body and the trigger secret." });
    const unsigned = await hook(trigger.hookUrl, { 'x-github-event': 'push', 'x-github-delivery': randomUUID() }, payload);
    expect(unsigned.status).toBe(401);
    expect(unsigned.json.message).toContain('the X-Hub-Signature-256 header is missing');
    // Signed for another body: the signature covers the raw bytes.
    const tampered = await hook(trigger.hookUrl, { 'x-github-event': 'push', 'x-github-delivery': randomUUID(), 'x-hub-signature-256': `sha256=${hmacHex(secret, payload)}` }, `${payload} `);
    expect(tampered.status).toBe(401);
    expect(await deliveries(trigger.id)).toEqual([]);
    expect((await api(stack, token, 'GET', '/v1/builds?limit=100')).json.builds.length).toBe(before);
    expect((await fetch(`${stack.url}/v1/hooks/${randomUUID()}`, { method: 'POST', body: '{}' })).status).toBe(404);
  });

  it('answers ping with 200 and records other events and deleted branches with the reason, building nothing', async () => {
    const secret = 'ping-secret-1';
    const trigger = await createTrigger({ repository: 'pings', provider: 'github', cloneUrl: git.url('app'), secret, rules: [{ ref: '^refs/heads/.*$', tags: ['{branch}'] }] });
    const ping = await github(trigger.hookUrl, secret, 'ping', { zen: 'Keep it logically awesome.', hook_id: 1 });
    expect([ping.status, ping.json.outcome]).toEqual([200, 'ping']);
    const issue = await github(trigger.hookUrl, secret, 'issues', { action: 'opened' });
    expect([issue.status, issue.json.outcome, issue.json.reason]).toEqual([200, 'skipped', 'the "issues" event does not build; only pushes do']);
    const deleted = await github(trigger.hookUrl, secret, 'push', githubPush({ ref: 'refs/heads/feature/x', before: 'b'.repeat(40), after: ZERO }));
    expect([deleted.json.outcome, deleted.json.reason, deleted.json.buildId]).toEqual(['skipped', 'refs/heads/feature/x was deleted; nothing to build', null]);
    const tag = await github(trigger.hookUrl, secret, 'push', githubPush({ ref: 'refs/tags/v9', after: 'c'.repeat(40) }));
    expect([tag.json.outcome, tag.json.reason]).toEqual(['skipped', 'no rule matches refs/tags/v9']);
    const list = await deliveries(trigger.id);
    expect(list.map((d) => [d.event, d.outcome, d.buildId])).toEqual([
      ['push', 'skipped', null],
      ['push', 'skipped', null],
      ['issues', 'skipped', null],
      ['ping', 'ping', null],
    ]);
  });

  it('starts no second build when a delivery comes again, and a redeliver action runs the push again as a new delivery', async () => {
    git.createRepo('again');
    const work = new WorkingCopy(git.pushUrl('again'));
    const sha = work.commit(project('again'), 'once');
    await work.push('main');
    const secret = 'again-secret-1';
    const trigger = await createTrigger({ repository: 'again', provider: 'github', cloneUrl: git.url('again'), secret, rules: [{ ref: '^refs/heads/main$', tags: ['latest'] }] });
    const payload = githubPush({ ref: 'refs/heads/main', after: sha, message: 'once' });
    const deliveryId = randomUUID();
    const first = await github(trigger.hookUrl, secret, 'push', payload, deliveryId);
    const second = await github(trigger.hookUrl, secret, 'push', payload, deliveryId);
    expect(first.json.outcome).toBe('build');
    expect([second.status, second.json.outcome, second.json.buildId]).toEqual([200, 'duplicate', first.json.buildId]);
    await waitForBuild(stack, token, first.json.buildId);
    expect((await api(stack, token, 'GET', `/v1/builds?sha=${sha}`)).json.builds).toHaveLength(1);
    const [recorded] = await deliveries(trigger.id);
    const again = await api(stack, token, 'POST', `/v1/triggers/${trigger.id}/deliveries/${recorded.id}/redeliver`);
    expect(again.status).toBe(200);
    expect(again.json.outcome).toBe('build');
    expect(again.json.buildId).not.toBe(first.json.buildId);
    expect((await waitForBuild(stack, token, again.json.buildId)).status).toBe('succeeded');
    expect((await api(stack, token, 'GET', `/v1/builds?sha=${sha}`)).json.builds).toHaveLength(2);
    expect(await deliveries(trigger.id)).toHaveLength(2);
    work.close();
  });

  it('starts one build for 50 concurrent copies of one delivery arriving at two api processes', async () => {
    git.createRepo('burst');
    const work = new WorkingCopy(git.pushUrl('burst'));
    const sha = work.commit(project('burst'), 'burst');
    await work.push('main');
    const secret = 'burst-secret-1';
    const trigger = await createTrigger({ repository: 'burst', provider: 'github', cloneUrl: git.url('burst'), secret, rules: [{ ref: '^refs/heads/main$', tags: ['latest'] }] });
    const other = await startApiProcess(stack);
    try {
      const body = JSON.stringify(githubPush({ ref: 'refs/heads/main', after: sha, message: 'burst' }));
      const headers = { 'content-type': 'application/json', 'x-github-event': 'push', 'x-github-delivery': randomUUID(), 'x-hub-signature-256': `sha256=${hmacHex(secret, body)}` };
      const answers = await Promise.all(
        Array.from({ length: 50 }, async (_, i) => {
          const base = i % 2 === 0 ? stack.url : other.url;
          const res = await fetch(`${base}${trigger.hookUrl}`, { method: 'POST', headers, body });
          return { status: res.status, json: (await res.json()) as any };
        }),
      );
      expect(answers.every((a) => a.status === 200)).toBe(true);
      const built = answers.filter((a) => a.json.outcome === 'build');
      expect(built).toHaveLength(1);
      expect(answers.filter((a) => a.json.outcome === 'duplicate')).toHaveLength(49);
      expect(new Set(answers.map((a) => a.json.buildId))).toEqual(new Set([built[0].json.buildId]));
      expect((await api(stack, token, 'GET', `/v1/builds?sha=${sha}`)).json.builds).toHaveLength(1);
      expect(await deliveries(trigger.id)).toHaveLength(1);
      expect((await waitForBuild(stack, token, built[0].json.buildId)).status).toBe('succeeded');
    } finally {
      await other.stop();
      work.close();
    }
  });

  it('applies path filters to the changed files and skips a push whose head commit says [skip ci] (GitLab, X-Gitlab-Token)', async () => {
    git.createRepo('filtered');
    const work = new WorkingCopy(git.pushUrl('filtered'));
    const secret = 'gitlab-token-1';
    const trigger = await createTrigger({
      repository: 'filtered',
      provider: 'gitlab',
      cloneUrl: git.url('filtered'),
      apiUrl: `${forge.url}/gitlab/api/v4`,
      secret,
      credentials: { token: 'glpat-test' },
      rules: [{ ref: '^refs/heads/main$', tags: ['{short_sha}'] }],
      paths: { include: ['src/**', 'Dockerfile'], exclude: ['src/**/*.md'] },
    });
    const send = (payload: unknown) =>
      hook(trigger.hookUrl, { 'x-gitlab-event': 'Push Hook', 'x-gitlab-token': secret, 'idempotency-key': randomUUID(), 'x-gitlab-event-uuid': randomUUID() }, JSON.stringify(payload));
    const docs = work.commit(project('docs', { 'README.md': 'docs\n', 'src/notes.md': 'notes\n' }), 'docs only');
    await work.push('main');
    const skippedDocs = await send(gitlabPush({ ref: 'refs/heads/main', after: docs, message: 'docs only', files: { added: ['README.md', 'src/notes.md'], modified: [] } }));
    expect([skippedDocs.json.outcome, skippedDocs.json.reason]).toEqual(['skipped', "none of the 2 changed file(s) passes the trigger's path filters"]);
    const ci = work.commit({ 'src/app.txt': 'v1\n' }, 'tweak [skip ci]');
    await work.push('main');
    const skippedCi = await send(gitlabPush({ ref: 'refs/heads/main', after: ci, message: 'tweak [skip ci]', files: { added: ['src/app.txt'] } }));
    expect([skippedCi.json.outcome, skippedCi.json.reason]).toEqual(['skipped', "the head commit's message says [skip ci]"]);
    const code = work.commit({ 'src/app.txt': 'v2\n' }, 'change the code');
    await work.push('main');
    const builds = await send(gitlabPush({ ref: 'refs/heads/main', after: code, message: 'change the code', files: { modified: ['src/app.txt'] } }));
    expect(builds.json.outcome).toBe('build');
    const built = await waitForBuild(stack, token, builds.json.buildId);
    expect([built.status, built.tags, built.source.provider]).toEqual(['succeeded', [code.slice(0, 7)], 'gitlab']);
    expect(readFileSync(`${await imageRoot('filtered', code.slice(0, 7))}/src/src/app.txt`, 'utf8')).toBe('v2\n');
    const statuses = await forge.waitFor(`/gitlab/api/v4/projects/42/statuses/${code}`, 2);
    expect(statuses.map((s) => [s.body.state, s.body.name, s.headers['private-token'], s.body.target_url])).toEqual([
      ['pending', 'strata/filtered', 'glpat-test', `${stack.url}/builds/${built.id}`],
      ['success', 'strata/filtered', 'glpat-test', `${stack.url}/builds/${built.id}`],
    ]);
    expect((await deliveries(trigger.id)).map((d) => d.outcome)).toEqual(['build', 'skipped', 'skipped']);
    work.close();
  });

  it("checks GitLab's signed form (webhook-id, webhook-timestamp, webhook-signature) and its timestamp tolerance", async () => {
    git.createRepo('signed');
    const work = new WorkingCopy(git.pushUrl('signed'));
    const sha = work.commit(project('signed'), 'signed push');
    await work.push('main');
    const key = Buffer.alloc(32, 9);
    const secret = `whsec_${key.toString('base64')}`;
    const trigger = await createTrigger({ repository: 'signed', provider: 'gitlab', cloneUrl: git.url('signed'), secret, rules: [{ ref: '^refs/heads/main$', tags: ['latest'] }] });
    const body = JSON.stringify(gitlabPush({ ref: 'refs/heads/main', after: sha, message: 'signed push' }));
    const signed = (id: string, ts: number) => ({
      'x-gitlab-event': 'Push Hook',
      'idempotency-key': id,
      'webhook-id': id,
      'webhook-timestamp': String(ts),
      'webhook-signature': `v1,${createHmac('sha256', key).update(`${id}.${ts}.${body}`).digest('base64')}`,
    });
    const now = Math.floor(Date.now() / 1000);
    const stale = await hook(trigger.hookUrl, signed('old-1', now - 3600), body);
    expect([stale.status, stale.json.message]).toEqual([401, "The webhook request is not signed with this trigger's secret: webhook-timestamp is more than 300 seconds from the server's clock."]);
    const wrongId = { ...signed('id-1', now), 'webhook-id': 'id-2', 'idempotency-key': 'id-2' };
    expect((await hook(trigger.hookUrl, wrongId, body)).status).toBe(401);
    const ok = await hook(trigger.hookUrl, signed('id-1', now), body);
    expect([ok.status, ok.json.outcome, ok.json.deliveryId]).toEqual([200, 'build', 'id-1']);
    expect((await waitForBuild(stack, token, ok.json.buildId)).status).toBe('succeeded');
    expect((await deliveries(trigger.id)).map((d) => d.deliveryId)).toEqual(['id-1']);
    work.close();
  });

  it('builds the new commit after a force-push, and the old commit can no longer be fetched', async () => {
    git.createRepo('forced');
    const work = new WorkingCopy(git.pushUrl('forced'));
    work.commit(project('base'), 'base');
    const old = work.commit({ 'version.txt': 'old\n' }, 'to be rewritten');
    await work.push('main');
    const secret = 'forced-secret-1';
    const trigger = await createTrigger({ repository: 'forced', provider: 'github', cloneUrl: git.url('forced'), secret, rules: [{ ref: '^refs/heads/main$', tags: ['{short_sha}'] }] });
    const rewritten = work.commit({ 'version.txt': 'rewritten\n' }, 'rewritten', true);
    expect(rewritten).not.toBe(old);
    await work.push('main', true);
    // The server drops what the force-push made unreachable, as a forge's gc would.
    execFileSync('git', ['-c', 'safe.directory=*', '-C', git.repoPath('forced'), 'reflog', 'expire', '--expire=now', '--all']);
    execFileSync('git', ['-c', 'safe.directory=*', '-C', git.repoPath('forced'), 'gc', '-q', '--prune=now']);
    const res = await github(trigger.hookUrl, secret, 'push', githubPush({ ref: 'refs/heads/main', before: old, after: rewritten, forced: true, message: 'rewritten' }));
    const built = await waitForBuild(stack, token, res.json.buildId);
    expect([built.status, built.source.sha]).toEqual(['succeeded', rewritten]);
    expect(readFileSync(`${await imageRoot('forced', rewritten.slice(0, 7))}/src/version.txt`, 'utf8')).toBe('rewritten\n');
    // A late delivery of the rewritten-away commit fails the build, saying the commit is gone.
    const late = await github(trigger.hookUrl, secret, 'push', githubPush({ ref: 'refs/heads/main', after: old, message: 'to be rewritten' }));
    const failed = await waitForBuild(stack, token, late.json.buildId);
    expect(failed.status).toBe('failed');
    expect(failed.error.message).toBe(`fetching the commit failed: commit ${old} was not found in ${git.url('forced')} (was it force-pushed away or never pushed?)`);
    work.close();
  });

  it('reports Bitbucket build statuses, records status failures on the delivery and never fails the build for them', async () => {
    git.createRepo('bucket');
    const work = new WorkingCopy(git.pushUrl('bucket'));
    const sha = work.commit(project('bucket'), 'bitbucket push');
    await work.push('main');
    const secret = 'bitbucket-secret-1';
    const trigger = await createTrigger({
      repository: 'bucket',
      provider: 'bitbucket',
      cloneUrl: git.url('bucket'),
      apiUrl: `${forge.url}/bb/2.0`,
      secret,
      credentials: { token: 'bb-token' },
      rules: [{ ref: '^refs/heads/main$', tags: ['latest'] }],
    });
    const send = (payload: unknown) => {
      const body = JSON.stringify(payload);
      return hook(trigger.hookUrl, { 'x-event-key': 'repo:push', 'x-request-uuid': randomUUID(), 'x-hook-uuid': randomUUID(), 'x-hub-signature': `sha256=${hmacHex(secret, body)}` }, body);
    };
    const res = await send(bitbucketPush({ branch: 'main', sha, message: 'bitbucket push' }));
    const built = await waitForBuild(stack, token, res.json.buildId);
    expect([built.status, built.source.author, built.source.message]).toEqual(['succeeded', 'Ada Lovelace <ada@example.com>', 'bitbucket push\n']);
    const statuses = await forge.waitFor(`/bb/2.0/repositories/acme/app/commit/${sha}/statuses/build`, 2);
    expect(statuses.map((s) => s.body)).toEqual([
      { key: 'strata-bucket', state: 'INPROGRESS', name: 'strata/bucket', url: `${stack.url}/builds/${built.id}`, description: 'Strata is building the image' },
      { key: 'strata-bucket', state: 'SUCCESSFUL', name: 'strata/bucket', url: `${stack.url}/builds/${built.id}`, description: 'The image was built' },
    ]);
    expect(statuses[0].headers.authorization).toBe('Bearer bb-token');

    // The forge is down: every status is tried 4 times, the failure is recorded, the build still succeeds.
    forge.failWith = 503;
    try {
      const sha2 = work.commit({ 'version.txt': 'two\n' }, 'second');
      await work.push('main');
      const res2 = await send(bitbucketPush({ branch: 'main', sha: sha2, message: 'second' }));
      const built2 = await waitForBuild(stack, token, res2.json.buildId);
      expect(built2.status).toBe('succeeded');
      const until = Date.now() + 30_000;
      let reports: any[] = [];
      while (reports.length < 2 && Date.now() < until) {
        reports = (await deliveries(trigger.id)).find((d) => d.buildId === built2.id).statusReports;
        await new Promise((r) => setTimeout(r, 200));
      }
      expect(reports.map((r) => [r.state, r.ok, r.attempts, r.httpStatus])).toEqual([
        ['pending', false, 4, 503],
        ['success', false, 4, 503],
      ]);
      expect(reports[0].error).toBe('the forge answered 503: {"message":"forge is down"}');
      expect(forge.requests.filter((r) => r.path.includes(sha2))).toHaveLength(8);
    } finally {
      forge.failWith = null;
    }
    work.close();
  });

  it('keeps the trigger secret and credentials sealed: never returned, not readable in the database', async () => {
    const trigger = await createTrigger({
      repository: 'sealed',
      provider: 'github',
      cloneUrl: git.url('app'),
      secret: 'very-secret-hook-key',
      credentials: { token: 'very-secret-token' },
      rules: [{ ref: '.*', tags: ['latest'] }],
    });
    const shown = await api(stack, token, 'GET', `/v1/triggers/${trigger.id}`);
    const listed = await api(stack, token, 'GET', '/v1/triggers');
    for (const text of [shown.text, listed.text, JSON.stringify(trigger)]) {
      expect(text).not.toContain('very-secret');
    }
    expect(shown.json.credentials).toEqual({ type: 'token', username: null });
    const row = await stack.prisma.trigger.findUniqueOrThrow({ where: { id: trigger.id } });
    expect(Buffer.from(row.secretSealed).includes('very-secret-hook-key')).toBe(false);
    expect(Buffer.from(row.credentialsSealed!).includes('very-secret-token')).toBe(false);
    const patched = await api(stack, token, 'PATCH', `/v1/triggers/${trigger.id}`, JSON.stringify({ rules: [{ ref: '^refs/heads/main$', tags: ['{branch}'] }] }), 'application/json');
    expect(patched.status).toBe(200);
    expect(patched.json.rules).toEqual([{ ref: '^refs/heads/main$', tags: ['{branch}'] }]);
    expect(patched.json.credentials).toEqual({ type: 'token', username: null });
    const bad = await api(stack, token, 'POST', '/v1/triggers', JSON.stringify({ repository: 'x', provider: 'github', cloneUrl: git.url('app'), secret: 'long-enough', rules: [{ ref: '(a+', tags: ['x'] }] }), 'application/json');
    expect([bad.status, bad.json.message]).toEqual([400, 'rules[0].ref: ref pattern "(a+": a "(" without its ")" at character 4.']);
    const backref = await api(stack, token, 'POST', '/v1/triggers', JSON.stringify({ repository: 'x', provider: 'github', cloneUrl: git.url('app'), secret: 'long-enough', rules: [{ ref: '(a)\\1', tags: ['{nope}'] }] }), 'application/json');
    expect(backref.json.message).toBe('rules[0].ref: ref pattern "(a)\\1": backreferences are not supported at character 6.');
    expect((await api(stack, token, 'DELETE', `/v1/triggers/${trigger.id}`)).status).toBe(204);
    expect((await api(stack, token, 'GET', `/v1/triggers/${trigger.id}`)).status).toBe(404);
  });

  it('fetches a private repository with the trigger token, and fails the build saying why when the token, the commit or the host is wrong', async () => {
    const privateGit = await startGitServer({ auth: { username: 'ci', password: 'repo-token' } });
    try {
      privateGit.createRepo('private');
      const work = new WorkingCopy(privateGit.pushUrl('private'));
      const sha = work.commit(project('private'), 'private push');
      await work.push('main');
      const secret = 'private-secret-1';
      const make = (repository: string, cloneUrl: string, credentials: unknown) =>
        createTrigger({ repository, provider: 'github', cloneUrl, secret, credentials, rules: [{ ref: '^refs/heads/main$', tags: ['latest'] }] });
      const push = (after: string) => githubPush({ ref: 'refs/heads/main', after, message: 'private push' });
      const good = await make('private', privateGit.url('private'), { username: 'ci', token: 'repo-token' });
      const ok = await waitForBuild(stack, token, (await github(good.hookUrl, secret, 'push', push(sha))).json.buildId);
      expect(ok.status).toBe('succeeded');
      // The token went only as the Authorization header: the URL the build records holds no credentials.
      expect(ok.source.cloneUrl).toBe(privateGit.url('private'));

      // A commit this worker has not fetched yet: a fetched one is kept by tenant, URL and sha, and reused.
      const sha2 = work.commit({ 'version.txt': 'two\n' }, 'second');
      await work.push('main');
      const wrongToken = await make('private-bad', privateGit.url('private'), { username: 'ci', token: 'wrong' });
      const denied = await waitForBuild(stack, token, (await github(wrongToken.hookUrl, secret, 'push', push(sha2))).json.buildId);
      expect([denied.status, denied.error.message]).toEqual(['failed', `fetching the commit failed: authentication to 127.0.0.1:${new URL(privateGit.url('x')).port} failed while fetching ${privateGit.url('private')}: check the trigger's credentials`]);

      const unknown = await waitForBuild(stack, token, (await github(good.hookUrl, secret, 'push', push('d'.repeat(40)))).json.buildId);
      expect(unknown.error.message).toBe(`fetching the commit failed: commit ${'d'.repeat(40)} was not found in ${privateGit.url('private')} (was it force-pushed away or never pushed?)`);

      // A port nothing listens on.
      const closed = await new Promise<number>((resolve) => {
        const probe = http.createServer().listen(0, '127.0.0.1', () => {
          const p = (probe.address() as AddressInfo).port;
          probe.close(() => resolve(p));
        });
      });
      const gone = await make('private-gone', `http://127.0.0.1:${closed}/private.git`, null);
      const unreachable = await waitForBuild(stack, token, (await github(gone.hookUrl, secret, 'push', push(sha))).json.buildId);
      expect(unreachable.status).toBe('failed');
      expect(unreachable.error.message).toMatch(new RegExp(`^fetching the commit failed: 127\\.0\\.0\\.1:${closed} could not be reached to fetch http://127\\.0\\.0\\.1:${closed}/private\\.git: .*Failed to connect to 127\\.0\\.0\\.1 port ${closed}`));
      work.close();
    } finally {
      await privateGit.close();
    }
  });

  it('refuses a loopback clone URL when STRATA_ALLOW_PRIVATE_SOURCES does not allow it', async () => {
    const strict = await startStack({ env: { STRATA_ALLOW_PRIVATE_SOURCES: '' } });
    try {
      expect(strict.config.allowPrivateSources).toEqual([]);
      const tenant = await strict.tenant('strict');
      const secret = 'strict-secret-1';
      const res = await api(strict, tenant.token, 'POST', '/v1/triggers', JSON.stringify({ repository: 'strict', provider: 'github', cloneUrl: git.url('app'), secret, rules: [{ ref: '.*', tags: ['latest'] }] }), 'application/json');
      expect(res.status).toBe(201);
      const body = JSON.stringify(githubPush({ ref: 'refs/heads/main', after: 'e'.repeat(40) }));
      const served = git.requests.length;
      const delivered = await fetch(`${strict.url}${res.json.hookUrl}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-github-event': 'push', 'x-github-delivery': randomUUID(), 'x-hub-signature-256': `sha256=${hmacHex(secret, body)}` },
        body,
      });
      const { buildId } = (await delivered.json()) as any;
      const failed = await waitForBuild(strict, tenant.token, buildId);
      expect(failed.status).toBe('failed');
      expect(failed.error.message).toBe(
        'fetching the commit failed: the clone URL was refused: 127.0.0.1 resolves to 127.0.0.1, a loopback address, which tenant-given URLs may not reach (an operator can allow it with STRATA_ALLOW_PRIVATE_SOURCES)',
      );
      expect(git.requests.length).toBe(served);
    } finally {
      await strict.close();
    }
  });

  it('creates a trigger with the CLI, which prints the payload URL and the secret once', async () => {
    const io = { stdout: '', stderr: '', out: (t: string) => void (io.stdout += t), err: (t: string) => void (io.stderr += t), env: { STRATA_URL: stack.url, STRATA_TOKEN: token, STRATA_GIT_TOKEN: 'cli-git-token' } };
    const code = await runCli(
      ['trigger', 'create', '--repository', 'cli-app', '--provider', 'github', '--clone-url', git.url('app'), '--rule', '^refs/heads/(main)$={1},sha-{short_sha}', '--include', 'src/**', '--context', 'app'],
      io,
    );
    expect([code, io.stderr]).toEqual([0, '']);
    const id = /^trigger ([0-9a-f-]{36})$/m.exec(io.stdout)![1];
    expect(io.stdout).toContain(`payload URL: ${stack.url}/v1/hooks/${id}\ncontent type: application/json\n`);
    const secret = /^secret: (\S+)$/m.exec(io.stdout)![1];
    const shown = (await api(stack, token, 'GET', `/v1/triggers/${id}`)).json;
    expect(shown).toMatchObject({ repository: 'cli-app', provider: 'github', context: 'app', rules: [{ ref: '^refs/heads/(main)$', tags: ['{1}', 'sha-{short_sha}'] }], paths: { include: ['src/**'] }, credentials: { type: 'token', username: null } });
    // The printed secret is the one the hook checks.
    const ping = await github(`/v1/hooks/${id}`, secret, 'ping', { zen: 'hi' });
    expect(ping.json.outcome).toBe('ping');
    const bad = { ...io, stdout: '', stderr: '' };
    expect(await runCli(['trigger', 'create', '--repository', 'x', '--provider', 'github', '--clone-url', git.url('app')], bad)).toBe(2);
  });

  it('builds from a context subdirectory with submodules fetched when the trigger asks', async () => {
    git.createRepo('lib');
    const lib = new WorkingCopy(git.pushUrl('lib'));
    lib.commit({ 'lib.txt': 'from the submodule\n' }, 'lib');
    await lib.push('main');
    git.createRepo('mono');
    const work = new WorkingCopy(git.pushUrl('mono'));
    work.commit({ 'README.md': 'not in the context\n', 'app/Dockerfile': 'FROM scratch\nCOPY . /src/\n', 'app/.dockerignore': 'local.env\n', 'app/local.env': 'x=1\n', 'app/app.txt': 'app\n' }, 'app');
    await work.gitAsync('-c', 'protocol.file.allow=never', 'submodule', 'add', '-q', git.url('lib'), 'app/vendor/lib');
    work.git('commit', '-q', '-m', 'add the lib submodule');
    const sha = work.git('rev-parse', 'HEAD');
    await work.push('main');
    const secret = 'mono-secret-1';
    const trigger = await createTrigger({ repository: 'mono', provider: 'github', cloneUrl: git.url('mono'), secret, context: 'app', submodules: true, rules: [{ ref: '^refs/heads/main$', tags: ['latest'] }] });
    const res = await github(trigger.hookUrl, secret, 'push', githubPush({ ref: 'refs/heads/main', after: sha, message: 'add the lib submodule' }));
    const built = await waitForBuild(stack, token, res.json.buildId);
    expect(built.status).toBe('succeeded');
    const root = await imageRoot('mono', 'latest');
    expect(readFileSync(`${root}/src/app.txt`, 'utf8')).toBe('app\n');
    expect(readFileSync(`${root}/src/vendor/lib/lib.txt`, 'utf8')).toBe('from the submodule\n');
    expect(() => statSync(`${root}/src/README.md`)).toThrow();
    expect(() => statSync(`${root}/src/local.env`)).toThrow();
    expect(() => statSync(`${root}/src/vendor/lib/.git`)).toThrow();

    // Without submodules: true the submodule directory stays empty.
    const plain = await createTrigger({ repository: 'mono-plain', provider: 'github', cloneUrl: git.url('mono'), secret, context: 'app', rules: [{ ref: '^refs/heads/main$', tags: ['latest'] }] });
    const res2 = await github(plain.hookUrl, secret, 'push', githubPush({ ref: 'refs/heads/main', after: sha }));
    expect((await waitForBuild(stack, token, res2.json.buildId)).status).toBe('succeeded');
    const plainRoot = await imageRoot('mono-plain', 'latest');
    expect(() => statSync(`${plainRoot}/src/vendor/lib/lib.txt`)).toThrow();
    lib.close();
    work.close();
  });

  it('takes a payload of 25 MiB and refuses a larger one with 413, storing nothing', async () => {
    const secret = 'large-secret-1';
    const trigger = await createTrigger({ repository: 'large', provider: 'github', cloneUrl: git.url('app'), secret, rules: [{ ref: '^refs/heads/nomatch$', tags: ['x'] }] });
    const payload = githubPush({ ref: 'refs/heads/main', after: 'f'.repeat(40) }) as Record<string, unknown>;
    const base = JSON.stringify({ ...payload, padding: '' });
    const limit = 25 * 1024 * 1024;
    const fits = JSON.stringify({ ...payload, padding: 'x'.repeat(limit - base.length) });
    expect(Buffer.byteLength(fits)).toBe(limit);
    const started = Date.now();
    const ok = await github(trigger.hookUrl, secret, 'push', JSON.parse(fits));
    process.stdout.write(`a 25 MiB signed push was answered in ${Date.now() - started} ms\n`);
    expect([ok.status, ok.json.outcome, ok.json.reason]).toEqual([200, 'skipped', 'no rule matches refs/heads/main']);
    const over = `${fits} `;
    const res = await fetch(`${stack.url}${trigger.hookUrl}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-github-event': 'push', 'x-github-delivery': randomUUID(), 'x-hub-signature-256': `sha256=${hmacHex(secret, over)}` },
      body: over,
    });
    expect(res.status).toBe(413);
    expect(((await res.json()) as any).message).toBe(`The webhook payload is larger than the limit of ${limit} bytes.`);
    expect(await deliveries(trigger.id)).toHaveLength(1);
  });
});

/** A second api as an OS process of its own (apps/api/src/main.ts from source) sharing the stack's Postgres, Redis and queue. */
async function startApiProcess(stack: Stack): Promise<{ url: string; stop(): Promise<void> }> {
  const port = await new Promise<number>((resolve) => {
    const probe = http.createServer().listen(0, '127.0.0.1', () => {
      const p = (probe.address() as AddressInfo).port;
      probe.close(() => resolve(p));
    });
  });
  const env = { ...process.env, ...envOf({ ...stack.config, port, publicUrl: `http://127.0.0.1:${port}` }), NODE_NO_WARNINGS: '1' };
  const child = spawn(process.execPath, ['--import', './bench/support/register-ts.mjs', 'apps/api/src/main.ts'], { cwd: path.resolve(import.meta.dirname, '..'), env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const until = Date.now() + 60_000;
  while (!out.includes('Strata api listening on')) {
    if (child.exitCode !== null || Date.now() > until) {
      child.kill('SIGKILL');
      throw new Error(`the second api did not start: ${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `http://127.0.0.1:${port}`,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    },
  };
}
