import { execFile } from 'node:child_process';
import { nativeSpawnEnabled, spawnPiped } from './spawn.js';

export class CommandError extends Error {
  override readonly name = 'CommandError';
  constructor(
    readonly command: string,
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(`${command} failed (exit ${exitCode ?? 'signal'}): ${stderr.trim() || 'no output'}`);
  }
}

export interface CommandOptions {
  cwd?: string;
  /** Bytes written to the command's stdin. */
  input?: string | Buffer;
}

const MAX_BUFFER = 256 * 1024 * 1024;

/**
 * Runs a host tool (mount, runc, ip, getfattr...) to completion and returns its stdout. Started
 * through the addon's posix_spawn, which does not fork the worker (docs/adr/0039), unless it
 * takes input on stdin: those (`ip -batch -`) go through child_process.
 */
export function runCommand(file: string, args: readonly string[], options: CommandOptions = {}): Promise<string> {
  const command = `${file} ${args.join(' ')}`.slice(0, 300);
  if (options.input === undefined && nativeSpawnEnabled()) return runPiped(file, args, command, options);
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      { cwd: options.cwd, maxBuffer: MAX_BUFFER, encoding: 'utf8' },
      (error, stdout, stderr) => {
        if (error) {
          const code = typeof (error as { code?: unknown }).code === 'number' ? ((error as { code: number }).code) : null;
          reject(new CommandError(command, code, stderr || error.message));
          return;
        }
        resolve(stdout);
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

/** runCommand through {@link spawnPiped}: what execFile reports, the same way. */
function runPiped(file: string, args: readonly string[], command: string, options: CommandOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawnPiped(file, args, options.cwd !== undefined ? { cwd: options.cwd } : {});
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let overflow: string | undefined;
    const take = (into: Buffer[], name: string) => {
      let bytes = 0;
      return (chunk: Buffer) => {
        if (overflow) return;
        bytes += chunk.length;
        into.push(chunk);
        if (bytes > MAX_BUFFER) {
          overflow = `${name} maxBuffer length exceeded`;
          child.kill('SIGTERM');
        }
      };
    };
    child.stdout.on('data', take(stdout, 'stdout'));
    child.stderr.on('data', take(stderr, 'stderr'));
    child.once('error', (error: Error) => reject(new CommandError(command, null, error.message)));
    child.once('close', (code: number | null) => {
      const err = Buffer.concat(stderr).toString('utf8');
      if (overflow) reject(new CommandError(command, null, err || overflow));
      else if (code === 0) resolve(Buffer.concat(stdout).toString('utf8'));
      else reject(new CommandError(command, code, err || `Command failed: ${file} ${args.join(' ')}`));
    });
  });
}
