import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startSshAgent } from './ssh-agents.js';
import { MAX_SOCKET_PATH } from './unix-socket.js';

describe('startSshAgent', () => {
  let work: string;
  let key: Buffer;
  beforeAll(() => {
    work = mkdtempSync(path.join(tmpdir(), 'strata-ssh-agent-'));
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'strata-test', '-f', path.join(work, 'key')]);
    key = readFileSync(path.join(work, 'key'));
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  const keysIn = (socket: string) => execFileSync('ssh-add', ['-l'], { env: { PATH: process.env.PATH, SSH_AUTH_SOCK: socket }, encoding: 'utf8' });

  it('holds the keys under the directory it is given, and removes its own when stopped', async () => {
    const agent = await startSshAgent(work, [key]);
    expect(agent.socket.startsWith(`${work}/ssh-`)).toBe(true);
    expect(keysIn(agent.socket)).toContain('strata-test');
    await agent.stop();
    expect(() => readFileSync(agent.socket)).toThrow();
  });

  it('starts under a directory too deep for a socket path (a long TMPDIR), its socket elsewhere', async () => {
    const deep = path.join(work, 'd'.repeat(60), 'e'.repeat(40));
    mkdirSync(deep, { recursive: true });
    expect(Buffer.byteLength(path.join(deep, 'ssh-XXXXXX', 'agent.sock'))).toBeGreaterThan(MAX_SOCKET_PATH);
    const agent = await startSshAgent(deep, [key]);
    try {
      expect(Buffer.byteLength(agent.socket)).toBeLessThanOrEqual(MAX_SOCKET_PATH);
      expect(keysIn(agent.socket)).toContain('strata-test');
    } finally {
      await agent.stop();
    }
  });
});
