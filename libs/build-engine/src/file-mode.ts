// COPY/ADD --chmod: an octal mode (755, 0644) or chmod(1)'s symbolic form (u+x, go-w, a=r,u+w),
// which BuildKit applies to each copied entry's own mode.

/** How --chmod changes one entry's permission bits (the result keeps only the low 12 bits). */
export type ModeChange = (mode: number, isDirectory: boolean) => number;

export class ChmodError extends Error {
  override readonly name = 'ChmodError';
}

const WHO: Record<string, number> = { u: 0o4700, g: 0o2070, o: 0o1007, a: 0o7777 };

/**
 * Parses --chmod. Octal sets the mode outright; symbolic clauses (`[ugoa]*([-+=]([rwxXst]*|[ugo]))+`,
 * comma-separated) are applied in order to each entry's mode, a missing "who" meaning all (no umask:
 * a build has none).
 */
export function parseChmod(spec: string): ModeChange {
  if (/^[0-7]{1,4}$/.test(spec)) {
    const mode = parseInt(spec, 8);
    return () => mode;
  }
  const clauses = spec.split(',').map((clause) => {
    const m = /^([ugoa]*)((?:[-+=](?:[ugo]|[rwxXst]*))+)$/.exec(clause);
    if (!m) throw new ChmodError(`--chmod="${spec}" is neither an octal mode like 755 nor a symbolic one like u+x,go-w`);
    const who = m[1] === '' ? 0o7777 : [...m[1]].reduce((mask, c) => mask | WHO[c], 0);
    const actions = [...m[2].matchAll(/([-+=])([ugo]|[rwxXst]*)/g)].map(([, op, perms]) => ({ op, perms }));
    return { who, actions };
  });
  return (start, isDirectory) => {
    let mode = start & 0o7777;
    for (const { who, actions } of clauses) {
      for (const { op, perms } of actions) {
        let bits = 0;
        if (perms === 'u' || perms === 'g' || perms === 'o') {
          // Copy another class's rwx bits to every class named.
          const shift = perms === 'u' ? 6 : perms === 'g' ? 3 : 0;
          const rwx = (mode >> shift) & 0o7;
          bits = (rwx << 6) | (rwx << 3) | rwx;
        } else {
          for (const p of perms) {
            if (p === 'r') bits |= 0o444;
            else if (p === 'w') bits |= 0o222;
            else if (p === 'x') bits |= 0o111;
            // X: execute only for directories or what some class may execute already.
            else if (p === 'X' && (isDirectory || (mode & 0o111) !== 0)) bits |= 0o111;
            else if (p === 's') bits |= 0o6000;
            else if (p === 't') bits |= 0o1000;
          }
        }
        bits &= who;
        if (op === '+') mode |= bits;
        else if (op === '-') mode &= ~bits;
        else mode = (mode & ~who) | bits;
      }
    }
    return mode & 0o7777;
  };
}
