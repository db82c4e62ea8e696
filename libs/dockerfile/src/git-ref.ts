// ADD's git sources, recognised as BuildKit's Dockerfile frontend recognises them
// (frontend/dockerfile/dfgitutil and util/gitutil, read, not copied): an http(s) URL whose path ends
// in `.git`, an ssh:// or git:// URL, or an scp-like `user@host:path`; the ref and subdirectory
// from the fragment (`#ref:subdir`, or `##ref=…,subdir=…`) or the query (`?ref=`, `?tag=`,
// `?branch=`, `?subdir=`, `?commit=`, `?keep-git-dir`, `?submodules`, `?mtime=`).

/** A git source as written in ADD. `problem` says why a source that is a git URL cannot be used. */
export interface GitSource {
  kind: 'git';
  url: string;
  /** What git is given: the URL without fragment and query. */
  remote: string;
  /** A branch, a tag, a full commit, or `refs/…`; null: the remote's default branch (HEAD). */
  ref: string | null;
  subdir: string | null;
  /** `?commit=`/`?checksum=`: the commit (or its prefix) the ref must resolve to. */
  checksum: string | null;
  /** `?keep-git-dir=`; the ADD flag of the same name must agree. */
  keepGitDir: boolean | null;
  /** `?submodules=`: submodules are fetched unless false. */
  submodules: boolean | null;
  /** `?mtime=`: file times from the commit (`commit`, Strata's default) or the time of the checkout. */
  mtime: 'commit' | 'checkout' | null;
  problem: string | null;
}

const SUPPORTED_SCHEMES = new Set(['http', 'https', 'ssh', 'git']);
const SCP_LIKE = /^([a-zA-Z0-9_-]+)@([a-zA-Z0-9.-]+):(.*?)(?:\?(.*?))?(?:#(.*))?$/;

/** The git source `src` names, or null when it is not one (a plain URL or a context path). */
export function parseGitSource(src: string): GitSource | null {
  if (src.startsWith('./') || src.startsWith('../')) return null;
  const scheme = /^([a-zA-Z0-9]+):\/\//.exec(src);
  let remote: string;
  let query: string;
  let fragment: string;
  if (scheme) {
    const proto = scheme[1].toLowerCase();
    if (!SUPPORTED_SCHEMES.has(proto)) return null;
    // Fragment and query as written (a URL parser would percent-encode the fragment's quotes).
    const hash = src.indexOf('#');
    const beforeHash = hash < 0 ? src : src.slice(0, hash);
    fragment = hash < 0 ? '' : src.slice(hash + 1);
    const q = beforeHash.indexOf('?');
    query = q < 0 ? '' : beforeHash.slice(q + 1);
    remote = q < 0 ? beforeHash : beforeHash.slice(0, q);
    let u: URL;
    try {
      u = new URL(remote);
    } catch {
      return null;
    }
    // An http(s) URL is a repository only when its path ends in .git (BuildKit); otherwise a file to download.
    if ((proto === 'http' || proto === 'https') && !u.pathname.endsWith('.git')) return null;
  } else {
    const m = SCP_LIKE.exec(src);
    if (!m) return null;
    remote = `${m[1]}@${m[2]}:${m[3]}`;
    query = m[4] ?? '';
    fragment = m[5] ?? '';
  }
  const out: GitSource = { kind: 'git', url: src, remote, ref: null, subdir: null, checksum: null, keepGitDir: null, submodules: null, mtime: null, problem: null };
  try {
    readFragment(out, fragment);
    if (query !== '') readQuery(out, query);
  } catch (e) {
    out.problem = (e as Error).message;
  }
  return out;
}

function readFragment(out: GitSource, fragment: string): void {
  if (fragment === '') return;
  if (!fragment.startsWith('#')) {
    const colon = fragment.indexOf(':');
    const ref = colon < 0 ? fragment : fragment.slice(0, colon);
    const subdir = colon < 0 ? '' : fragment.slice(colon + 1);
    out.ref = ref === '' ? null : ref;
    out.subdir = subdir === '' ? null : subdir;
    return;
  }
  // `##ref=…,commit=…,subdir=…`: comma separated, a field in double quotes may hold commas.
  for (const field of csvFields(fragment.slice(1))) {
    const eq = field.indexOf('=');
    if (eq < 0) throw new Error(`invalid field "${field}" in the URL fragment: it must be a key=value pair`);
    const key = field.slice(0, eq).toLowerCase();
    const value = field.slice(eq + 1);
    if (key === 'ref') out.ref = value || null;
    else if (key === 'commit') out.checksum = value || null;
    else if (key === 'subdir') out.subdir = value || null;
    else throw new Error(`unexpected key "${key}" in the URL fragment (supported keys: ref, commit, subdir)`);
  }
  if (out.checksum !== null && out.ref === null) out.ref = out.checksum;
}

function csvFields(s: string): string[] {
  const fields: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '"') {
      if (quoted && s[i + 1] === '"') {
        cur += '"';
        i++;
      } else quoted = !quoted;
    } else if (c === ',' && !quoted) {
      fields.push(cur);
      cur = '';
    } else cur += c;
  }
  if (quoted) throw new Error('unterminated quote in the URL fragment');
  if (cur !== '' || fields.length > 0) fields.push(cur);
  return fields;
}

function readBool(key: string, values: string[]): boolean {
  const v = values[0];
  if (v === '') return true;
  if (/^(1|t|true)$/i.test(v)) return true;
  if (/^(0|f|false)$/i.test(v)) return false;
  throw new Error(`invalid ${key} value: "${v}"`);
}

function readQuery(out: GitSource, query: string): void {
  const params = new URLSearchParams(query);
  let tag = '';
  let branch = '';
  for (const key of new Set(params.keys())) {
    const values = params.getAll(key);
    if (values.length > 1) throw new Error(`query "${key}" has multiple values`);
    if (values[0] === '' && key !== 'submodules' && key !== 'keep-git-dir') throw new Error(`query "${key}" has no value`);
    const v = values[0];
    switch (key) {
      case 'ref':
        if (out.ref !== null && out.ref !== v) throw new Error(`ref conflicts: "${out.ref}" vs "${v}"`);
        out.ref = v;
        break;
      case 'tag':
        tag = v;
        break;
      case 'branch':
        branch = v;
        break;
      case 'subdir':
        if (out.subdir !== null && out.subdir !== v) throw new Error(`subdir conflicts: "${out.subdir}" vs "${v}"`);
        out.subdir = v;
        break;
      case 'checksum':
      case 'commit':
        out.checksum = v;
        break;
      case 'keep-git-dir':
        out.keepGitDir = readBool(key, values);
        break;
      case 'submodules':
        out.submodules = readBool(key, values);
        break;
      case 'mtime':
        if (v !== 'commit' && v !== 'checkout') throw new Error(`invalid mtime value: "${v}" (must be "checkout" or "commit")`);
        out.mtime = v;
        break;
      default:
        throw new Error(`unexpected query "${key}" (supported: ref, tag, branch, subdir, commit, checksum, keep-git-dir, submodules, mtime)`);
    }
  }
  if (tag !== '') {
    const full = tag.startsWith('refs/tags/') ? tag : `refs/tags/${tag}`;
    if (out.ref !== null && out.ref !== full) throw new Error(`ref conflicts: "${out.ref}" vs "${full}"`);
    out.ref = full;
  }
  if (branch !== '') {
    if (tag !== '') throw new Error('branch conflicts with tag');
    const full = branch.startsWith('refs/heads/') ? branch : `refs/heads/${branch}`;
    if (out.ref !== null && out.ref !== full) throw new Error(`ref conflicts: "${out.ref}" vs "${full}"`);
    out.ref = full;
  }
  if (out.checksum !== null && out.ref === null) out.ref = out.checksum;
}
