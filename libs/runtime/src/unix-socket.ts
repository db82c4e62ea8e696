/** The longest path a unix socket may be bound at: sun_path holds 108 bytes, its NUL included. */
export const MAX_SOCKET_PATH = 107;

/** Whether a socket can be bound at `socketPath` (its length in bytes, not characters). */
export function socketPathFits(socketPath: string): boolean {
  return Buffer.byteLength(socketPath) <= MAX_SOCKET_PATH;
}
