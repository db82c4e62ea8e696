import { randomUUID } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Page } from 'playwright-core';
import { type Browser, launchBrowser, signInPage } from './support/browser.js';
import { startForgeRecorder } from './support/forge-recorder.js';
import { startGitServer, WorkingCopy } from './support/git-server.js';
import { githubPush, hmacHex } from './support/github-hooks.js';
import { importBusybox } from './support/images.js';
import { api, makeDir, type Stack, startStack, tarOf, waitForBuild } from './support/stack.js';


const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// Screenshots go to a scratch directory; STRATA_CONSOLE_SCREENSHOTS=1 also copies them into docs/console for the README.
const shots = mkdtempSync(path.join(tmpdir(), 'strata-console-shots-'));

async function submit(stack: Stack, token: string, repository: string, dockerfile: string, files: Record<string, string> = {}, tag = 'latest') {
  const res = await api(stack, token, 'POST', `/v1/builds?repository=${repository}&tag=${tag}`, tarOf(makeDir({ Dockerfile: dockerfile, ...files })), 'application/x-tar');
  if (res.status !== 202) throw new Error(`build submission answered ${res.status}: ${res.text}`);
  return res.json.id as string;
}

/** The build's own output lines the page renders right now (the virtualized window), without line numbers. */
async function visibleLines(page: Page): Promise<string[]> {
  return page.locator('.log-line.stream-stdout .lt').allTextContents();
}

describe('web console in Chromium', () => {
  let stack: Stack;
  let browser: Browser;
  let token: string;
  let tenant: string;

  beforeAll(async () => {
    if (!existsSync(path.join(root, 'apps/console/dist/index.html'))) throw new Error('apps/console/dist is missing: npm test builds it before jest runs');
    stack = await startStack();
    ({ token, name: tenant } = await stack.tenant('console'));
    await importBusybox(stack, token);
    browser = await launchBrowser();
  });
  afterAll(async () => {
    await browser?.close();
    await stack?.close();
    if (process.env.STRATA_CONSOLE_SCREENSHOTS === '1') {
      mkdirSync(path.join(root, 'docs/console'), { recursive: true });
      for (const f of ['builds-light.png', 'builds-dark.png', 'build-light.png', 'build-dark.png']) {
        if (existsSync(path.join(shots, f))) copyFileSync(path.join(shots, f), path.join(root, 'docs/console', f));
      }
    }
  });

  it('serves the console at / with its headers and an SPA fallback, leaving /v1, /healthz and /docs alone', async () => {
    const home = await fetch(`${stack.url}/`);
    expect(home.status).toBe(200);
    expect(home.headers.get('content-type')).toContain('text/html');
    const csp = home.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toContain('unsafe-inline');
    expect(csp).toContain("frame-ancestors 'none'");
    expect(home.headers.get('referrer-policy')).toBe('no-referrer');
    const html = await home.text();
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    const deep = await fetch(`${stack.url}/builds/00000000-0000-0000-0000-000000000000`);
    expect(deep.status).toBe(200);
    expect(await deep.text()).toBe(html);
    expect((await fetch(`${stack.url}/assets/nope.js`)).status).toBe(404);
    const v1 = await api(stack, null, 'GET', '/v1/builds');
    expect(v1.status).toBe(401);
    expect(v1.json.message).toContain('Authorization');
    expect((await fetch(`${stack.url}/healthz`)).status).toBe(200);
    expect(await (await fetch(`${stack.url}/docs`)).text()).toContain('swagger');
  });

  it('signs in with a pasted token, refuses a wrong one, and keeps the token out of the URL', async () => {
    const page = await browser.newPage();
    await page.goto(stack.url);
    await page.getByLabel('API token').fill('not-a-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expectText(page.getByRole('alert'), 'The API token is not valid.');
    await page.screenshot({ path: path.join(shots, 'signin.png') });
    await page.getByLabel('API token').fill(token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Builds' }).waitFor();
    await page.locator('.tenant', { hasText: tenant }).waitFor();
    expect(page.url()).not.toContain(token);
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('API token').waitFor();
    expect(await page.evaluate('sessionStorage.length')).toBe(0);
    await page.close();
  });

  it('shows log lines while the build runs, then its steps; a rebuild shows them cached', async () => {
    const id = await submit(stack, token, 'live', 'FROM busybox:1\nCOPY hello.txt /hello.txt\nRUN echo first-line; sleep 3; echo second-line; sleep 3; echo third-line\n', { 'hello.txt': 'hi\n' }, 'v1');
    const page = await browser.newPage();
    await signInPage(page, `${stack.url}/builds/${id}`, token);
    await page.locator('.log-line.stream-stdout', { hasText: 'first-line' }).waitFor({ timeout: 60_000 });
    // Seen before the build ended: the API still says running.
    const during = await api(stack, token, 'GET', `/v1/builds/${id}`);
    expect(during.json.status).toBe('running');
    expect((await visibleLines(page)).some((l) => l.includes('third-line'))).toBe(false);
    await page.locator('.log-line.stream-stdout', { hasText: 'third-line' }).waitFor({ timeout: 60_000 });
    await page.locator('.build-header .status-succeeded').waitFor({ timeout: 60_000 });
    await page.locator('.build-header .digest').waitFor();
    const pull = await page.getByLabel('Pull command').textContent();
    const built = await waitForBuild(stack, token, id);
    expect(pull).toBe(`docker pull ${new URL(stack.url).host}/${tenant}/live@${built.imageDigest}`);
    // The first build ran every step.
    const runStep = page.locator('.timeline .step', { hasText: 'RUN echo first-line' });
    await runStep.waitFor();
    expect(await runStep.getAttribute('data-cached')).toBe('false');
    expect(await runStep.locator('.miss').textContent()).toContain('no earlier build');
    expect(await page.locator('.timeline .step[data-cached="true"]').count()).toBe(0);

    await page.getByRole('button', { name: 'Rebuild' }).click();
    await page.waitForURL((u) => u.pathname.startsWith('/builds/') && !u.pathname.endsWith(id));
    const rebuildId = page.url().split('/builds/')[1];
    await page.locator('.build-header .status-succeeded').waitFor({ timeout: 60_000 });
    await page.locator('.timeline .step[data-cached="true"]', { hasText: 'RUN echo first-line' }).waitFor();
    expect(await page.locator('.timeline .step[data-cached="false"]').count()).toBe(0);
    expect(await page.locator('.timeline .badge-cached').count()).toBe(built.steps.length);
    const rebuilt = await waitForBuild(stack, token, rebuildId);
    expect(rebuilt.steps.every((s: { cached: boolean }) => s.cached)).toBe(true);
    expect(rebuilt.imageDigest).toBe(built.imageDigest);
    await page.close();
  });

  it('resumes the live log after the connection drops, without losing or repeating a line', async () => {
    const id = await submit(stack, token, 'flaky-net', 'FROM busybox:1\nRUN for i in 1 2 3 4 5 6 7 8; do echo "beat $i"; sleep 1; done\n');
    const page = await browser.newPage();
    await signInPage(page, `${stack.url}/builds/${id}`, token);
    await page.locator('.log-line.stream-stdout', { hasText: 'beat 2' }).waitFor({ timeout: 60_000 });
    // Every open connection to the api is cut, the log's among them, as a proxy restart would.
    (stack.app.getHttpServer() as import('node:http').Server).closeAllConnections();
    await page.locator('.log-line.stream-stdout', { hasText: 'beat 8' }).waitFor({ timeout: 60_000 });
    await page.locator('.build-header .status-succeeded').waitFor({ timeout: 30_000 });
    await expectText(page.getByTestId('log-status'), ' lines');
    const text = (await api(stack, token, 'GET', `/v1/builds/${id}/logs`)).text.split('\n').filter(Boolean);
    const shown = await page.getByTestId('log-status').textContent();
    expect(shown).toBe(`${text.length} lines`);
    for (let i = 1; i <= 8; i++) expect(await page.locator('.log-line.stream-stdout', { hasText: `beat ${i}` }).count()).toBe(1);
    await page.close();
  });

  it('shows why a build failed with its Dockerfile line highlighted', async () => {
    const id = await submit(stack, token, 'broken', 'FROM busybox:1 as base\nRUN echo fine\nRUN echo about-to-fail && exit 3\nRUN echo never\n');
    const page = await browser.newPage();
    await signInPage(page, `${stack.url}/builds/${id}`, token);
    await page.locator('.build-header .status-failed').waitFor({ timeout: 60_000 });
    const failing = page.locator('.failure .dockerfile-line.failing');
    await failing.waitFor();
    expect(await failing.getAttribute('data-line')).toBe('3');
    expect(await failing.textContent()).toContain('RUN echo about-to-fail && exit 3');
    const build = await waitForBuild(stack, token, id);
    await expectText(page.locator('.failure-message'), build.error.message);
    // The lines around it are shown too, not highlighted.
    expect(await page.locator('.failure .dockerfile-line:not(.failing)').count()).toBeGreaterThanOrEqual(2);
    // The Dockerfile's lint warnings are listed with their positions.
    const warning = page.locator('.warnings li[data-line="1"]');
    await expectText(warning, 'FromAsCasing');
    await expectText(warning, 'Dockerfile:1:1');
    // The error quotes the step's output over two lines: each is a row of its own in the log.
    const tail = page.locator('.log-line.stream-system', { hasText: '(Dockerfile line 3)' });
    await tail.waitFor();
    expect(await tail.locator('.lt').textContent()).toBe('about-to-fail (Dockerfile line 3)');
    // The step it stopped in is marked on the timeline.
    await page.locator('.timeline .step.step-failed', { hasText: 'RUN echo about-to-fail && exit 3' }).locator('.badge-failed').waitFor();
    await page.screenshot({ path: path.join(shots, 'failed.png'), fullPage: true });
    await page.close();
  });

  it('renders a line of HTML as text and ANSI colours as styles, and no script runs', async () => {
    const problems = browser.problems.length;
    const id = await submit(
      stack,
      token,
      'xss',
      "FROM busybox:1\nRUN echo '<img src=x onerror=alert(1)>'; printf '\\033[31mred-text\\033[0m plain\\n'; echo '<script>alert(2)</script>'\n",
    );
    await waitForBuild(stack, token, id);
    const page = await browser.newPage();
    await signInPage(page, `${stack.url}/builds/${id}`, token);
    await page.locator('.log-line.stream-stdout', { hasText: '<img src=x onerror=alert(1)>' }).waitFor();
    await page.locator('.log-line.stream-stdout', { hasText: '<script>alert(2)</script>' }).waitFor();
    expect(await page.locator('.log img, .log script').count()).toBe(0);
    const red = page.locator('.log-line .fg-c1', { hasText: 'red-text' });
    await red.waitFor();
    const colorOf = (selector: string) => page.evaluate<string>(`getComputedStyle(document.querySelector(${JSON.stringify(selector)})).color`);
    expect(await colorOf('.log-line .fg-c1')).not.toBe(await colorOf('.log-line.stream-stdout .lt'));
    expect((await page.locator('.log-line.stream-stdout', { hasText: 'red-text' }).textContent()) ?? '').not.toContain('\u001b');
    // Collapsing the step hides its lines; expanding shows them again.
    const section = page.locator('.log-section', { hasText: "RUN echo '<img src=x onerror=alert(1)>'" });
    await section.getByRole('button').click();
    expect(await section.getByRole('button').getAttribute('aria-expanded')).toBe('false');
    await page.locator('.log-line.stream-stdout', { hasText: 'red-text' }).waitFor({ state: 'detached' });
    await section.getByRole('button').click();
    await page.locator('.log-line.stream-stdout', { hasText: 'red-text' }).waitFor();
    // The raw download is the text log, escapes and all.
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download raw' }).click()]);
    expect(download.suggestedFilename()).toBe(`build-${id}.log`);
    const raw = readFileSync((await download.path())!, 'utf8');
    expect(raw).toContain('<img src=x onerror=alert(1)>');
    expect(raw).toContain('\u001b[31mred-text\u001b[0m plain');
    await page.waitForTimeout(300);
    expect(browser.problems.slice(problems).filter((p) => /dialog|Content Security Policy|page error/.test(p))).toEqual([]);
    await page.close();
  });

  it('returns to sign-in with a message when the token stops working', async () => {
    const other = await stack.tenant('console-401');
    const page = await browser.newPage();
    await signInPage(page, stack.url, other.token);
    await page.getByRole('heading', { name: 'Builds' }).waitFor();
    await page.getByText('No builds yet').waitFor();
    await stack.prisma.apiToken.updateMany({ where: { tenantId: other.tenantId }, data: { revokedAt: new Date() } });
    // The list refreshes by itself; the next request answers 401.
    await expectText(page.getByRole('status'), 'Signed out: The API token is not valid.', 20_000);
    await page.getByLabel('API token').waitFor();
    expect(await page.evaluate("sessionStorage.getItem('strata.token')")).toBeNull();
    await page.close();
  });

  it('lists tags with digest and size, copies the pull command, and deletes a tag', async () => {
    const id = await submit(stack, token, 'shop/web', 'FROM busybox:1\nCOPY a.txt /a.txt\n', { 'a.txt': 'a\n' }, 'keep');
    const first = await waitForBuild(stack, token, id);
    expect(first.status).toBe('succeeded');
    const res2 = await api(stack, token, 'POST', `/v1/builds/${id}/rebuild`);
    expect(res2.status).toBe(202);
    // Same tags as the first build; add another tag through a second build.
    await waitForBuild(stack, token, res2.json.id);
    const id3 = await submit(stack, token, 'shop/web', 'FROM busybox:1\nCOPY a.txt /a.txt\n', { 'a.txt': 'a\n' }, 'old');
    await waitForBuild(stack, token, id3);

    const page = await browser.newPage();
    await signInPage(page, `${stack.url}/repositories`, token);
    await page.getByRole('link', { name: 'shop/web' }).click();
    await page.locator('tr[data-tag="keep"]').waitFor();
    const row = page.locator('tr[data-tag="old"]');
    await expectText(row, first.imageDigest.slice(0, 19));
    expect(await row.locator('td.num').textContent()).toMatch(/\d+(\.\d)? (B|KiB|MiB)/);
    expect(await row.getByRole('button', { name: /Copy pull/ }).getAttribute('title')).toBe(`docker pull ${new URL(stack.url).host}/${tenant}/shop/web:old`);
    await row.getByRole('button', { name: 'Delete tag old' }).click();
    await row.getByRole('button', { name: 'Delete old' }).click();
    await row.waitFor({ state: 'detached' });
    await page.locator('tr[data-tag="keep"]').waitFor();
    await page.screenshot({ path: path.join(shots, 'tags.png') });
    const tags = await api(stack, token, 'GET', '/v1/repositories/shop/web/tags');
    expect(tags.json.tags.map((t: { name: string }) => t.name)).toEqual(['keep']);
    await page.close();
  });

  it('follows the log until the reader scrolls up, then offers "jump to end"; search and #L permalinks find lines', async () => {
    const id = await submit(
      stack,
      token,
      'chatty',
      'FROM busybox:1\nRUN i=0; while [ $i -lt 400 ]; do echo "burst $i"; i=$((i+1)); done; j=0; while [ $j -lt 12 ]; do sleep 1; echo "tick $j"; j=$((j+1)); done\n',
    );
    const page = await browser.newPage();
    await signInPage(page, `${stack.url}/builds/${id}`, token);
    const log = page.locator('.log-scroll');
    await page.locator('.log-line.stream-stdout', { hasText: 'burst 399' }).waitFor({ timeout: 60_000 });
    expect(await log.getAttribute('data-following')).toBe('true');
    await page.locator('.log-line.stream-stdout', { hasText: 'tick 0' }).waitFor({ timeout: 30_000 });
    // The reader scrolls up: following stops and stays stopped while lines keep coming.
    await log.hover();
    await page.mouse.wheel(0, -1500);
    await page.getByRole('button', { name: /Jump to end/ }).waitFor();
    expect(await log.getAttribute('data-following')).toBe('false');
    const top = await log.evaluate((el) => el.scrollTop);
    const status = page.getByTestId('log-status');
    const before = await status.textContent();
    await eventually(() => status.textContent(), (now) => expect(now).not.toBe(before), 15_000);
    expect(await log.evaluate((el) => el.scrollTop)).toBe(top);
    expect((await visibleLines(page)).some((l) => l.startsWith('tick'))).toBe(false);
    await page.getByRole('button', { name: /Jump to end/ }).click();
    expect(await log.getAttribute('data-following')).toBe('true');
    await eventually(() => log.evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight), (gap) => expect(gap).toBeLessThan(20));

    // Search counts matches across the whole log, not only what is on screen, and scrolls to them.
    await page.locator('.build-header .status-succeeded').waitFor({ timeout: 60_000 });
    await page.getByLabel('Search the log').fill('burst 12');
    await expectText(page.getByTestId('match-count'), 'of 11');
    await page.getByLabel('Search the log').press('Enter');
    await page.locator('.log-line.is-match mark.hit-current', { hasText: 'burst 12' }).waitFor();

    // Clicking a line number makes its permalink; opening the permalink shows that line.
    const burst7 = page.locator('.log-line', { hasText: 'burst 7' }).first();
    await page.getByLabel('Search the log').fill('burst 7');
    await page.getByLabel('Search the log').press('Enter');
    await burst7.waitFor();
    const target = await burst7.getAttribute('data-n');
    // Click that very line: the virtualized list may re-render between the two calls, and `.first()`
    // would then resolve to another line holding "burst 7" (burst 17, burst 70…).
    await page.locator(`.log-line[data-n="${target}"] .ln`).click();
    expect(new URL(page.url()).hash).toBe(`#L${target}`);
    await page.locator(`.log-line.is-target[data-n="${target}"]`).waitFor();
    const linked = await browser.newPage();
    await signInPage(linked, stack.url, token);
    await linked.goto(`${stack.url}/builds/${id}#L${target}`);
    const line = linked.locator(`.log-line.is-target[data-n="${target}"]`);
    await line.waitFor();
    expect(await line.textContent()).toContain('burst 7');
    expect(await linked.locator('.log-scroll').getAttribute('data-following')).toBe('false');
    await linked.close();
    await page.close();
  });

  it('is usable at 1280 and 390 pixels wide, in light and dark, by keyboard; cancels a running build', async () => {
    // A few builds of every outcome for the list, then the pictures the README shows.
    // A two-stage build, then the same with one file changed: the page shows cached steps beside a miss and its reason.
    const apiServer = 'FROM busybox:1 AS base\nRUN printf "\\033[32m✔ compiled\\033[0m 124 modules\\n"\nFROM base\nCOPY app.txt /srv/app.txt\nRUN echo ready\n';
    await waitForBuild(stack, token, await submit(stack, token, 'api-server', apiServer, { 'app.txt': 'x\n' }, 'v1.4.1'));
    const ok = await submit(stack, token, 'api-server', apiServer, { 'app.txt': 'y\n' }, 'v1.4.2');
    expect((await waitForBuild(stack, token, ok)).steps.filter((st: { cached: boolean }) => st.cached).length).toBe(1);
    // One that failed, for the list's colours and its status filter.
    await waitForBuild(stack, token, await submit(stack, token, 'db-migrations', 'FROM busybox:1\nRUN echo "migration 0042 failed: column exists" >&2; exit 1\n'));
    // And one still running, to be cancelled from its page below.
    const sleeper = await submit(stack, token, 'nightly-report', 'FROM busybox:1\nRUN echo generating; sleep 60\n');
    for (let i = 0; i < 300 && (await api(stack, token, 'GET', `/v1/builds/${sleeper}`)).json.status !== 'running'; i++) await new Promise((r) => setTimeout(r, 100));
    const cases: Array<['light' | 'dark', string]> = [
      ['light', 'light'],
      ['dark', 'dark'],
    ];
    for (const [scheme, name] of cases) {
      const page = await browser.newPage({ colorScheme: scheme });
      await signInPage(page, stack.url, token);
      await page.locator('.builds-table tbody tr').first().waitFor();
      await page.screenshot({ path: path.join(shots, `builds-${name}.png`) });
      if (scheme === 'light') {
        // Filters: by status, then by repository too; the URL keeps them.
        await page.getByLabel('Status').selectOption('failed');
        await page.waitForURL((u) => u.searchParams.get('status') === 'failed');
        await eventually(() => page.locator('.builds-table tbody tr .status').allTextContents(), (all) => expect(all.length > 0 && all.every((t) => t === 'Failed')).toBe(true));
        await page.getByLabel('Repository').selectOption('api-server');
        await page.getByText('No builds match these filters').waitFor();
        await page.getByRole('button', { name: 'Clear filters' }).click();
        await page.locator('.builds-table tbody tr', { hasText: 'nightly-report' }).waitFor();
      }
      await page.goto(`${stack.url}/builds/${ok}`);
      await page.locator('.build-header .status-succeeded').waitFor();
      await page.locator('.log-line.stream-stdout', { hasText: 'ready' }).waitFor();
      await page.screenshot({ path: path.join(shots, `build-${name}.png`), fullPage: true });
      const bg = await page.evaluate<string>('getComputedStyle(document.body).backgroundColor');
      const [r, g, b] = bg.match(/\d+/g)!.map(Number);
      if (scheme === 'dark') expect(r + g + b).toBeLessThan(150);
      else expect(r + g + b).toBeGreaterThan(600);
      await page.close();
    }

    // Cancel from the page: the running build ends cancelled.
    const cancelling = await browser.newPage();
    await signInPage(cancelling, `${stack.url}/builds/${sleeper}`, token);
    await cancelling.locator('.log-line.stream-stdout', { hasText: 'generating' }).waitFor({ timeout: 30_000 });
    await cancelling.getByRole('button', { name: 'Cancel' }).click();
    await cancelling.locator('.build-header .status-cancelled').waitFor({ timeout: 30_000 });
    expect((await waitForBuild(stack, token, sleeper)).status).toBe('cancelled');
    await cancelling.close();

    // 390 px: nothing wider than the screen but the log itself, which scrolls inside its frame.
    const phone = await browser.newPage({ width: 390, height: 844 });
    await signInPage(phone, stack.url, token);
    await phone.locator('.builds-table tbody tr').first().waitFor();
    expect(await phone.evaluate<number>('document.documentElement.scrollWidth')).toBeLessThanOrEqual(390);
    await phone.goto(`${stack.url}/builds/${ok}`);
    await phone.locator('.log-line.stream-stdout', { hasText: 'ready' }).waitFor();
    expect(await phone.evaluate<number>('document.documentElement.scrollWidth')).toBeLessThanOrEqual(390);
    await phone.screenshot({ path: path.join(shots, 'build-390.png'), fullPage: true });
    await phone.close();

    // Keyboard: Tab reaches the skip link, then the navigation, each with a visible focus ring.
    const page = await browser.newPage();
    await signInPage(page, stack.url, token);
    await page.locator('.builds-table tbody tr').first().waitFor();
    await page.keyboard.press('Tab');
    expect(await page.evaluate('document.activeElement?.textContent')).toBe('Skip to content');
    const seen: string[] = [];
    for (let i = 0; i < 7; i++) {
      await page.keyboard.press('Tab');
      // Code that runs in Chromium is given as text: this program has Node's types, not the DOM's.
      const focused = await page.evaluate<{ text: string; outline: string }>(
        "({ text: document.activeElement?.textContent?.trim() ?? '', outline: getComputedStyle(document.activeElement).outlineStyle })",
      );
      expect(focused.outline).not.toBe('none');
      seen.push(focused.text);
    }
    expect(seen).toEqual(expect.arrayContaining(['Builds', 'Repositories', 'Triggers', 'Dockerfile check', 'Sign out']));
    await page.close();
  });

  it('pages through the builds, newest first', async () => {
    const paging = await stack.tenant('console-paging');
    const ids: string[] = [];
    for (let i = 0; i < 22; i++) ids.push(await submit(stack, paging.token, `page-${i}`, 'FROM scratch\nCOPY a /a\n', { a: String(i) }));
    const page = await browser.newPage();
    await signInPage(page, stack.url, paging.token);
    const rows = page.locator('.builds-table tbody tr');
    await eventually(() => rows.count(), (n) => expect(n).toBe(20));
    expect(await rows.first().getAttribute('data-build-id')).toBe(ids[21]);
    await page.getByRole('button', { name: 'Older →' }).click();
    await eventually(() => page.locator('.builds-table tbody tr').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-build-id'))), (shown) => expect(shown).toEqual([ids[1], ids[0]]));
    expect(await page.getByRole('button', { name: 'Older →' }).isDisabled()).toBe(true);
    await page.getByRole('button', { name: '← Newer' }).click();
    await eventually(() => rows.count(), (n) => expect(n).toBe(20));
    expect(await rows.first().getAttribute('data-build-id')).toBe(ids[21]);
    expect(await page.getByRole('button', { name: '← Newer' }).isDisabled()).toBe(true);
    await page.close();
  });

  it('checks a pasted Dockerfile: its stage graph, and findings at their lines', async () => {
    const page = await browser.newPage();
    await signInPage(page, `${stack.url}/check`, token);
    await page.getByRole('textbox', { name: 'Dockerfile' }).fill('FROM busybox as deps\nRUN echo deps\nFROM scratch AS final\nCOPY --from=deps /bin/sh /sh\nRUNN oops\n');
    await page.getByRole('button', { name: 'Check' }).click();
    await expectText(page.locator('.check-output h2'), '1 error');
    const bad = page.locator('.dockerfile-line.has-error');
    expect(await bad.getAttribute('data-line')).toBe('5');
    await expectText(bad, 'unknown instruction "RUNN"');
    await page.getByRole('textbox', { name: 'Dockerfile' }).fill('FROM busybox as deps\nRUN echo deps\nFROM scratch AS final\nCOPY --from=deps /bin/sh /sh\n');
    await page.getByRole('button', { name: 'Check' }).click();
    await expectText(page.locator('.check-output h2'), 'No errors');
    expect(await page.locator('.stage-graph .node').count()).toBe(2);
    expect(await page.locator('.stage-graph .edge').count()).toBe(1);
    expect(await page.locator('.dockerfile-line.has-warning').getAttribute('data-line')).toBe('1');
    await page.screenshot({ path: path.join(shots, 'check.png'), fullPage: true });
    await page.close();
  });

  it('lists triggers with their hook URL, shows a trigger\'s deliveries and redelivers a push; the build shows its commit', async () => {
    const problems = browser.problems.length;
    const page = await browser.newPage();
    await signInPage(page, `${stack.url}/`, token);
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Triggers' }).click();
    await expectText(page.locator('.empty'), 'strata trigger create');

    const git = await startGitServer();
    const forge = await startForgeRecorder();
    try {
      git.createRepo('site');
      const work = new WorkingCopy(git.pushUrl('site'));
      const sha = work.commit({ Dockerfile: 'FROM scratch\nCOPY index.html /\n', 'index.html': '<h1>hi</h1>\n' }, 'add the home page\n\nwith a body line');
      await work.push('main');
      const secret = 'console-hook-secret';
      const created = await api(stack, token, 'POST', '/v1/triggers', JSON.stringify({ repository: 'site', provider: 'github', cloneUrl: git.url('site'), apiUrl: `${forge.url}/gh`, secret, credentials: { token: 'forge-token' }, rules: [{ ref: '^refs/heads/main$', tags: ['latest', 'sha-{short_sha}'] }] }), 'application/json');
      expect(created.status).toBe(201);
      const trigger = created.json as { id: string; hookUrl: string; hookPublicUrl: string };
      const deliver = async (event: string, payload: unknown) => {
        const body = JSON.stringify(payload);
        const res = await fetch(`${stack.url}${trigger.hookUrl}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-github-event': event, 'x-github-delivery': randomUUID(), 'x-hub-signature-256': `sha256=${hmacHex(secret, body)}` }, body });
        expect(res.status).toBe(200);
        return (await res.json()) as { deliveryId: string; buildId: string | null };
      };
      await deliver('ping', { zen: 'Keep it logically awesome.', hook_id: 1 });
      const push = await deliver('push', githubPush({ ref: 'refs/heads/main', after: sha, message: 'add the home page\n\nwith a body line', cloneUrl: git.url('site') }));
      expect(push.buildId).toBeTruthy();
      await waitForBuild(stack, token, push.buildId!);

      // The list: a fresh load shows the new trigger with its rule and a copy button for the hook URL.
      await page.reload();
      const row = page.locator(`tr[data-trigger="${trigger.id}"]`);
      await expectText(row, 'site');
      expect(await row.textContent()).toContain('github');
      expect(await row.textContent()).toContain(git.url('site'));
      expect(await row.locator('.rules').textContent()).toBe('^refs/heads/main$ → latestsha-{short_sha}');
      expect(await row.getByRole('button', { name: /^Copy hook URL: / }).getAttribute('aria-label')).toBe(`Copy hook URL: ${trigger.hookPublicUrl}`);
      await page.screenshot({ path: path.join(shots, 'triggers.png'), fullPage: true });

      // The trigger: both deliveries, the push with its commit, build link and the statuses sent to the forge.
      await row.getByRole('link', { name: 'site' }).click();
      await page.getByRole('heading', { name: 'Deliveries' }).waitFor();
      const pushRow = page.locator(`tr[data-delivery="${push.deliveryId}"]`);
      await expectText(pushRow, sha.slice(0, 7));
      expect(await pushRow.textContent()).toContain('refs/heads/main');
      expect(await pushRow.locator('.chip').textContent()).toBe('build');
      await expectText(pushRow, 'success sent', 20_000);
      expect(await pushRow.textContent()).toContain('pending sent');
      await expectText(page.locator('tbody tr', { hasText: 'ping' }), 'ping');
      expect(await page.locator('tbody tr', { hasText: 'ping' }).getByRole('button', { name: /Redeliver/ }).count()).toBe(0);
      await page.screenshot({ path: path.join(shots, 'trigger.png'), fullPage: true });

      await pushRow.getByRole('button', { name: `Redeliver ${push.deliveryId}` }).click();
      await eventually(() => page.locator('tbody tr').count(), (n) => expect(n).toBe(3));
      const deliveries = (await api(stack, token, 'GET', `/v1/triggers/${trigger.id}/deliveries`)).json.deliveries as Array<{ deliveryId: string; outcome: string; buildId: string | null }>;
      const again = deliveries[0];
      expect(again.deliveryId).toContain(push.deliveryId);
      expect(again.outcome).toBe('build');
      expect(again.buildId).not.toBe(push.buildId);
      const againRow = page.locator('tbody tr').first();
      await expectText(againRow, again.buildId!.slice(0, 8));

      // The build link opens the build, which shows the commit it built.
      await againRow.getByRole('link', { name: again.buildId!.slice(0, 8) }).click();
      await page.locator('.build-header .status-succeeded').waitFor({ timeout: 60_000 });
      const commit = page.locator('.facts .commit');
      await expectText(commit, sha.slice(0, 12));
      expect(await commit.textContent()).toContain('refs/heads/main');
      expect(await commit.textContent()).toContain('add the home page');
      expect(await commit.textContent()).not.toContain('with a body line');
      expect(await commit.textContent()).toContain('Ada Lovelace <ada@example.com>');
      expect(browser.problems.slice(problems)).toEqual([]);
    } finally {
      await page.close();
      await forge.close();
      await git.close();
    }
  });
});

/** Reads until `check` passes or the time is up (then its last failure is the test's). */
async function eventually<T>(read: () => Promise<T>, check: (value: T) => void, timeout = 10_000): Promise<void> {
  const until = Date.now() + timeout;
  for (;;) {
    const value = await read();
    try {
      check(value);
      return;
    } catch (e) {
      if (Date.now() > until) throw e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function expectText(locator: ReturnType<Page['locator']>, text: string, timeout = 10_000): Promise<void> {
  await eventually(async () => (await locator.first().textContent().catch(() => '')) ?? '', (t) => expect(t).toContain(text), timeout);
}
