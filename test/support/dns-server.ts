import { type ChildProcess, spawn } from 'node:child_process';

/**
 * A stand-in resolver for tests: a Node process serving UDP DNS on `address:53` inside a network
 * namespace the test made. It answers A queries for the names in `zone` with their address, any
 * other type of a known name with no record, and an unknown name with NXDOMAIN. It prints one line
 * per query it receives (`query <name> from <address>`), so a test can see who asked.
 */
export function startStandInDns(netns: string, address: string, zone: Record<string, string>): { process: ChildProcess; queries: string[]; ready: Promise<void> } {
  const script = `
    const dgram = require('node:dgram');
    const zone = ${JSON.stringify(zone)};
    const socket = dgram.createSocket('udp4');
    socket.on('message', (msg, rinfo) => {
      if (msg.length < 12 || msg.readUInt16BE(2) & 0x8000) return;
      let at = 12;
      const labels = [];
      while (at < msg.length && msg[at] > 0 && msg[at] < 64) { labels.push(msg.subarray(at + 1, at + 1 + msg[at]).toString()); at += msg[at] + 1; }
      const end = at + 5;
      if (end > msg.length) return;
      const name = labels.join('.').toLowerCase();
      const type = msg.readUInt16BE(at + 1);
      console.log('query ' + name + ' from ' + rinfo.address);
      const head = Buffer.from(msg.subarray(0, 12));
      const known = Object.prototype.hasOwnProperty.call(zone, name);
      head.writeUInt16BE(0x8400 | (msg.readUInt16BE(2) & 0x0100) | (known ? 0 : 3), 2);
      head.writeUInt16BE(1, 4);
      head.writeUInt16BE(known && type === 1 ? 1 : 0, 6);
      head.writeUInt16BE(0, 8);
      head.writeUInt16BE(0, 10);
      const parts = [head, msg.subarray(12, end)];
      if (known && type === 1) parts.push(Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, ...zone[name].split('.').map(Number)]));
      socket.send(Buffer.concat(parts), rinfo.port, rinfo.address);
    });
    socket.bind(53, ${JSON.stringify(address)}, () => console.log('listening'));
  `;
  const child = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const queries: string[] = [];
  let rest = '';
  const ready = new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the stand-in resolver on ${address} exited (${code})`)));
    child.stdout!.on('data', (chunk: Buffer) => {
      const lines = (rest + chunk.toString()).split('\n');
      rest = lines.pop()!;
      if (lines.includes('listening')) resolve();
      queries.push(...lines.filter((l) => l.startsWith('query ')));
    });
  });
  return { process: child, queries, ready };
}
