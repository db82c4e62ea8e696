// Interleaved A/B of one blob upload (POST, PATCH with the whole blob and its Content-Length, PUT) against
// several running apis: wall time and the api process's CPU time (/proc/<pid>/stat) per upload, median.
// Usage: node bench/registry/upload-ab.mjs <MiB> <rounds> <API token> <tenant> name=<url>=<pid> ...
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
const [mib, rounds, token, tenant, ...targets] = process.argv.slice(2);
const apis = targets.map((t) => { const [name, url, pid] = t.split('='); return { name, url, pid, cpu: [], wall: [] }; });
const cpuMs = (pid) => { const s = readFileSync(`/proc/${pid}/stat`, 'utf8'); const f = s.slice(s.lastIndexOf(')') + 2).split(' '); return (Number(f[11]) + Number(f[12])) * 10; };
const auth = { authorization: `Basic ${Buffer.from(`x:${token}`).toString('base64')}` };
const l0 = loadavg()[0];
for (let r = 0; r < Number(rounds); r++) {
  for (const a of (r % 2 ? [...apis].reverse() : apis)) {
    const data = randomBytes(Number(mib) * 1024 * 1024);
    const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    const c0 = cpuMs(a.pid); const t0 = performance.now();
    const post = await fetch(`${a.url}/v2/${tenant}/micro/blobs/uploads/`, { method: 'POST', headers: auth });
    const loc = post.headers.get('location'); await post.arrayBuffer();
    const patch = await fetch(new URL(loc, a.url), { method: 'PATCH', headers: { ...auth, 'content-type': 'application/octet-stream', 'content-length': String(data.length) }, body: data });
    await patch.arrayBuffer(); if (patch.status !== 202) throw new Error(`PATCH ${patch.status}`);
    const put = await fetch(new URL(`${loc}?digest=${digest}`, a.url), { method: 'PUT', headers: auth });
    await put.arrayBuffer(); if (put.status !== 201) throw new Error(`PUT ${put.status}`);
    a.wall.push(performance.now() - t0); await new Promise((r) => setTimeout(r, 50)); a.cpu.push(cpuMs(a.pid) - c0);
  }
}
const med = (x) => [...x].sort((p, q) => p - q)[Math.floor(x.length / 2)];
console.log(`${mib} MiB x ${rounds}, load ${l0.toFixed(1)} -> ${loadavg()[0].toFixed(1)}`);
for (const a of apis) console.log(a.name.padEnd(8), 'wall', med(a.wall).toFixed(0), 'cpu', med(a.cpu), '| cpu', a.cpu.join(','));
