import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { closedPort, portOpen } from './ports.js';

/**
 * A git host over ssh on 127.0.0.1: Debian's sshd on a free port with its own host key, accepting
 * only the key this helper makes (for root, whose shell runs git-upload-pack), nothing else. The
 * repositories are bare repositories on disk, named by absolute path in `ssh://root@127.0.0.1:PORT/…`.
 */
export interface SshGitServer {
  /** The private key (OpenSSH format) the server accepts. */
  clientKey: Buffer;
  url(bareRepo: string): string;
  port: number;
  close(): Promise<void>;
}

export async function startSshGitServer(): Promise<SshGitServer> {
  const dir = mkdtempSync(path.join(tmpdir(), 'strata-sshd-'));
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(dir, 'host_key')]);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'strata-test', '-f', path.join(dir, 'client_key')]);
  writeFileSync(path.join(dir, 'authorized_keys'), readFileSync(path.join(dir, 'client_key.pub')));
  const port = await closedPort();
  writeFileSync(
    path.join(dir, 'sshd_config'),
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${path.join(dir, 'host_key')}`,
      `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
      `PidFile ${path.join(dir, 'sshd.pid')}`,
      'AllowUsers root',
      'PermitRootLogin prohibit-password',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
      'AllowTcpForwarding no',
      'X11Forwarding no',
      '',
    ].join('\n'),
  );
  // sshd's privilege separation directory.
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const sshd = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', path.join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  sshd.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  for (let waited = 0; !(await portOpen(port)); waited += 50) {
    if (sshd.exitCode !== null || waited > 10_000) throw new Error(`sshd did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    clientKey: readFileSync(path.join(dir, 'client_key')),
    port,
    url: (bareRepo) => `ssh://root@127.0.0.1:${port}${bareRepo}`,
    async close() {
      if (sshd.exitCode === null) {
        const exited = new Promise((r) => sshd.once('exit', r));
        sshd.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
