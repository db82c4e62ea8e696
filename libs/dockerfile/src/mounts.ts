import type { CacheSharing, Mount, MountType } from './ast.js';
import { parseCsvRecord, parseGoBool, parseRamInBytes, parseUint32 } from './values.js';

const MOUNT_TYPES: readonly MountType[] = ['bind', 'cache', 'tmpfs', 'secret', 'ssh'];
const SHARING: readonly CacheSharing[] = ['shared', 'private', 'locked'];
const KNOWN_KEYS = [
  'type', 'from', 'source', 'target', 'readonly', 'id', 'sharing', 'required', 'size', 'mode', 'uid',
  'gid', 'src', 'dst', 'destination', 'ro', 'rw', 'readwrite', 'env',
];

/** Thrown for an invalid `--mount` value; the message is one sentence. */
export class MountError extends Error {}

/**
 * Parses one `RUN --mount=` value (CSV `key=value` fields) like BuildKit. With `expand`, every value
 * is expanded first and everything is validated. Without it (parse time), fields whose value holds
 * a variable are kept as written and checks that depend on them are left for later, except `from`,
 * which may never use variables.
 */
export function parseMount(raw: string, expand?: (value: string) => string): Mount {
  const fields = parseCsvRecord(raw);
  if (typeof fields === 'string') throw new MountError(`cannot read --mount=${raw}: ${fields}`);
  const m: Mount = {
    type: 'bind', from: null, source: null, target: null, readOnly: false, id: null, sharing: null,
    required: false, size: null, mode: null, uid: null, gid: null, env: null, raw,
  };
  let deferred = false; // a value could not be checked before expansion
  let roAuto = true;
  for (const field of fields) {
    const eq = field.indexOf('=');
    const key = (eq < 0 ? field : field.slice(0, eq)).toLowerCase();
    if (eq < 0) {
      switch (key) {
        case 'readonly': case 'ro':
          m.readOnly = true;
          roAuto = false;
          continue;
        case 'readwrite': case 'rw':
          m.readOnly = false;
          roAuto = false;
          continue;
        case 'required':
          if (m.type === 'secret' || m.type === 'ssh' || deferred) {
            m.required = true;
            continue;
          }
          throw new MountError(`the mount option "required" is not allowed for ${m.type} mounts`);
        default:
          throw new MountError(`the mount option "${field}" must be a key=value pair`);
      }
    }
    let value = field.slice(eq + 1);
    if (expand) value = expand(value);
    else if (key === 'from') {
      const dollar = value.indexOf('$');
      if (dollar !== -1 && dollar !== value.length - 1) {
        throw new MountError("the mount option 'from' does not support variable expansion; define an alias stage with FROM instead");
      }
    }
    const unexpanded = !expand && value.includes('$');
    if (unexpanded) deferred = true;
    const invalid = (what: string): never => {
      throw new MountError(`invalid value "${value}" for the mount option "${key}"${what}`);
    };
    switch (key) {
      case 'type': {
        const t = value.toLowerCase() as MountType;
        if (MOUNT_TYPES.includes(t)) m.type = t;
        else if (!unexpanded) throw new MountError(`unsupported mount type "${value}"; use one of ${MOUNT_TYPES.join(', ')}`);
        break;
      }
      case 'from':
        m.from = value;
        break;
      case 'source': case 'src':
        m.source = value;
        break;
      case 'target': case 'dst': case 'destination':
        m.target = value;
        break;
      case 'readonly': case 'ro': case 'readwrite': case 'rw': {
        const b = parseGoBool(value);
        roAuto = false;
        if (b === null) {
          if (!unexpanded) invalid('');
          break;
        }
        m.readOnly = key === 'readonly' || key === 'ro' ? b : !b;
        break;
      }
      case 'required': {
        if (m.type !== 'secret' && m.type !== 'ssh' && !deferred) {
          throw new MountError(`the mount option "required" is not allowed for ${m.type} mounts`);
        }
        const b = parseGoBool(value);
        if (b === null) {
          if (!unexpanded) invalid('');
          break;
        }
        m.required = b;
        break;
      }
      case 'size': {
        if (m.type !== 'tmpfs' && !deferred) throw new MountError(`the mount option "size" is only allowed for tmpfs mounts`);
        const n = parseRamInBytes(value);
        if (n === null) {
          if (!unexpanded) invalid(' (use a size such as 64m)');
          break;
        }
        m.size = n;
        break;
      }
      case 'id':
        m.id = value;
        break;
      case 'sharing': {
        const s = value.toLowerCase() as CacheSharing;
        if (SHARING.includes(s)) m.sharing = s;
        else if (!unexpanded) throw new MountError(`unsupported sharing value "${value}"; use one of ${SHARING.join(', ')}`);
        break;
      }
      case 'mode': {
        const n = parseUint32(value, 8);
        if (n === null) {
          if (!unexpanded) invalid(' (use an octal mode such as 0400)');
          break;
        }
        m.mode = n;
        break;
      }
      case 'uid': case 'gid': {
        const n = parseUint32(value, 10);
        if (n === null) {
          if (!unexpanded) invalid('');
          break;
        }
        if (key === 'uid') m.uid = n;
        else m.gid = n;
        break;
      }
      case 'env':
        m.env = value;
        break;
      default: {
        const hint = suggestKey(key);
        throw new MountError(`unknown mount option "${key}"${hint ? ` (did you mean ${hint}?)` : ''}`);
      }
    }
  }
  if (!deferred) {
    const fileInfoAllowed = m.type === 'secret' || m.type === 'ssh' || m.type === 'cache';
    if (!fileInfoAllowed) {
      for (const k of ['mode', 'uid', 'gid'] as const) {
        if (m[k] !== null) throw new MountError(`the mount option "${k}" is not allowed for ${m.type} mounts`);
      }
    }
    if (m.type === 'secret') {
      if (m.from !== null) throw new MountError('a secret mount cannot have a "from" option');
      if (m.sharing !== null) throw new MountError('a secret mount cannot set "sharing"');
      if (m.source === null && m.target === null && m.id === null) {
        throw new MountError('a secret mount needs an id, a source or a target');
      }
      if (m.source !== null && m.id !== null) throw new MountError('a secret mount cannot set both "source" and "id"');
    }
    if (m.sharing !== null && m.type !== 'cache') throw new MountError(`cache sharing is not allowed for ${m.type} mounts`);
  }
  if (roAuto) m.readOnly = !(m.type === 'cache' || m.type === 'tmpfs');
  return m;
}

function suggestKey(key: string): string | null {
  let best: string | null = null;
  let bestDist = 3;
  for (const k of KNOWN_KEYS) {
    const d = editDistance(key, k);
    if (d < bestDist) {
      best = k;
      bestDist = d;
    }
  }
  return best;
}

/** Levenshtein distance, for "did you mean" hints. */
export function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 8) return Math.abs(a.length - b.length);
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}
