// The Debian base image for the benchmarks (STACK-NOTES): `debootstrap --variant=minbase bookworm`
// from the Debian mirror apt already uses, apt caches and lists removed, tarred with --numeric-owner.
// About 30 s, so the tar is kept under .strata/bench/ (git-ignored) and reused while it exists.
// Nothing is fetched from anywhere but that mirror.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { run } from './procs.mjs';

export const DEBIAN_SUITE = 'bookworm';

/** apt's sources: one-line `.list` files and deb822 `.sources` files, in the order apt reads them. */
export function aptSources() {
  const files = [];
  if (existsSync('/etc/apt/sources.list')) files.push('/etc/apt/sources.list');
  const dir = '/etc/apt/sources.list.d';
  if (existsSync(dir)) {
    for (const f of readdirSync(dir).sort()) if (f.endsWith('.list') || f.endsWith('.sources')) files.push(path.join(dir, f));
  }
  const entries = [];
  for (const file of files) {
    const text = readFileSync(file, 'utf8');
    if (file.endsWith('.sources')) {
      for (const stanza of text.split(/\n\s*\n/)) {
        const fields = {};
        let last = null;
        for (const line of stanza.split('\n')) {
          if (/^\s*#/.test(line) || line.trim() === '') continue;
          const m = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(line);
          if (m) { last = m[1].toLowerCase(); fields[last] = m[2].trim(); } else if (last && /^\s/.test(line)) fields[last] += ` ${line.trim()}`;
        }
        if (!fields.uris || (fields.enabled ?? 'yes').toLowerCase() === 'no') continue;
        const types = (fields.types ?? '').split(/\s+/);
        for (const uri of fields.uris.split(/\s+/)) {
          entries.push({ file, type: types.includes('deb') ? 'deb' : types[0], uri, suites: (fields.suites ?? '').split(/\s+/).filter(Boolean), signedBy: fields['signed-by'] ?? null });
        }
      }
    } else {
      for (const raw of text.split('\n')) {
        const line = raw.replace(/#.*/, '').trim();
        if (!line) continue;
        const m = /^(deb|deb-src)\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)/.exec(line);
        if (!m) continue;
        const signed = /signed-by=(\S+)/.exec(m[2] ?? '');
        entries.push({ file, type: m[1], uri: m[3], suites: [m[4]], signedBy: signed ? signed[1] : null });
      }
    }
  }
  return entries;
}

/** The mirror apt uses for `suite` itself (not -updates/-security): the first `deb` entry that lists it. */
export function debianMirror(suite = DEBIAN_SUITE, log = () => {}) {
  const entries = aptSources();
  for (const e of entries) log(`apt source (${e.file}): ${e.type} ${e.uri} ${e.suites.join(' ')}${e.signedBy ? ` signed-by ${e.signedBy}` : ''}`);
  const hit = entries.find((e) => e.type === 'deb' && e.suites.includes(suite) && /^https?:\/\//.test(e.uri));
  if (!hit) throw new Error(`no apt source (deb, http) for the suite "${suite}" in /etc/apt/sources.list or /etc/apt/sources.list.d/*.list|*.sources`);
  return { uri: hit.uri, keyring: hit.signedBy && hit.signedBy.startsWith('/') && existsSync(hit.signedBy) ? hit.signedBy : null, file: hit.file };
}

/**
 * The path of debian-minbase-<suite>.tar under cacheDir, made with debootstrap if it is not there yet.
 * Returns { tar, bytes, cached, debootstrapSeconds, mirror } (seconds and mirror from the run that made it,
 * kept in a .json next to the tar).
 */
export function debianBaseTar(cacheDir, { suite = DEBIAN_SUITE, log = () => {} } = {}) {
  const tar = path.join(cacheDir, `debian-minbase-${suite}.tar`);
  const metaFile = `${tar}.json`;
  if (existsSync(tar)) {
    const meta = existsSync(metaFile) ? JSON.parse(readFileSync(metaFile, 'utf8')) : {};
    log(`Debian base: reusing ${tar} (${(statSync(tar).size / 1024 ** 2).toFixed(0)} MiB, made ${meta.made ?? '?'} from ${meta.mirror ?? '?'})`);
    return { ...meta, tar, bytes: statSync(tar).size, cached: true };
  }
  mkdirSync(cacheDir, { recursive: true });
  const { uri, keyring } = debianMirror(suite, log);
  const dir = path.join(cacheDir, `debian-minbase-${suite}.rootfs-${process.pid}`);
  const unmountUnder = () => run('sh', ['-c', `grep -o " ${dir}/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null; true`]);
  rmSync(dir, { recursive: true, force: true });
  const args = ['--variant=minbase', ...(keyring ? [`--keyring=${keyring}`] : []), suite, dir, uri];
  log(`Debian base: debootstrap ${args.join(' ')} (about 30 s; once, then cached in ${tar})`);
  const t0 = performance.now();
  try {
    try {
      run('debootstrap', args, { env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C' } });
    } catch (e) {
      const logTail = existsSync(path.join(dir, 'debootstrap/debootstrap.log')) ? readFileSync(path.join(dir, 'debootstrap/debootstrap.log'), 'utf8').slice(-1500) : '';
      throw new Error(`${e.message}\n${logTail}`);
    }
    const debootstrapSeconds = (performance.now() - t0) / 1000;
    unmountUnder();
    // apt's caches and lists: the package files debootstrap leaves, the .bin caches, the downloaded indexes.
    run('sh', ['-c', 'rm -rf var/cache/apt/*.bin var/cache/apt/archives/*.deb var/cache/apt/archives/partial/* var/lib/apt/lists/*'], { cwd: dir });
    const tmp = `${tar}.tmp-${process.pid}`;
    run('tar', ['-cf', tmp, '--numeric-owner', '-C', dir, '.']);
    renameSync(tmp, tar);
    const meta = { made: new Date().toISOString(), suite, variant: 'minbase', mirror: uri, keyring, debootstrapSeconds: Number(debootstrapSeconds.toFixed(1)) };
    writeFileSync(metaFile, `${JSON.stringify(meta, null, 2)}\n`);
    const bytes = statSync(tar).size;
    log(`Debian base: debootstrap took ${debootstrapSeconds.toFixed(1)} s, ${tar} is ${(bytes / 1024 ** 2).toFixed(0)} MiB`);
    return { ...meta, tar, bytes, cached: false };
  } finally {
    unmountUnder();
    rmSync(dir, { recursive: true, force: true });
  }
}
