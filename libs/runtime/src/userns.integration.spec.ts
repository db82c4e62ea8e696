import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, linkSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './fixtures.test.js';
import { shiftOwnersBack, UserNamespaces, USERNS_RANGE_SIZE } from './userns.js';

const HOST = 2 ** 30 + 5 * USERNS_RANGE_SIZE;
/** A v3 security.capability (cap_net_bind_service, effective) rooted in the namespace whose root is HOST. */
const CAP_V3 = Buffer.concat([Buffer.from('01000003', 'hex'), Buffer.from('00040000000000000000000000000000', 'hex'), Buffer.alloc(4)]);
CAP_V3.writeUInt32LE(HOST, 20);

/** A posix_acl_access xattr: owner rw, user `uid` r, group r, mask r, other r. */
function acl(uid: number): Buffer {
  const entries: Array<[number, number, number]> = [[0x01, 6, 0xffffffff], [0x02, 4, uid], [0x04, 4, 0xffffffff], [0x10, 4, 0xffffffff], [0x20, 4, 0xffffffff]];
  const out = Buffer.alloc(4 + entries.length * 8);
  out.writeUInt32LE(2, 0);
  entries.forEach(([tag, perm, id], i) => {
    out.writeUInt16LE(tag, 4 + i * 8);
    out.writeUInt16LE(perm, 6 + i * 8);
    out.writeUInt32LE(id, 8 + i * 8);
  });
  return out;
}

function xattrHex(path: string, name: string): string {
  const out = execFileSync('getfattr', ['-h', '-n', name, '-e', 'hex', '--absolute-names', path], { encoding: 'utf8' });
  return out.split('\n').find((l) => l.startsWith(`${name}=`))!.slice(name.length + 3);
}

describe('shiftOwnersBack', () => {
  let dir: string;
  beforeEach(() => {
    dir = tempDir('shift');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('gives back the owners the step wrote, with set-id bits, capabilities, ACLs and hard links intact, and leaves whiteouts alone', async () => {
    chownSync(dir, HOST, HOST);
    mkdirSync(join(dir, 'd'));
    chownSync(join(dir, 'd'), HOST + 1000, HOST + 1000);
    writeFileSync(join(dir, 'd', 'suid'), 'x');
    chownSync(join(dir, 'd', 'suid'), HOST, HOST + 50);
    chmodSync(join(dir, 'd', 'suid'), 0o4755);
    linkSync(join(dir, 'd', 'suid'), join(dir, 'd', 'suid-link'));
    symlinkSync('/nowhere', join(dir, 'link'));
    execFileSync('chown', ['-h', `${HOST + 7}:${HOST + 8}`, join(dir, 'link')]);
    writeFileSync(join(dir, 'cap'), '');
    chownSync(join(dir, 'cap'), HOST, HOST);
    execFileSync('setfattr', ['-n', 'security.capability', '-v', `0x${CAP_V3.toString('hex')}`, join(dir, 'cap')]);
    writeFileSync(join(dir, 'acl'), '');
    chownSync(join(dir, 'acl'), HOST, HOST);
    execFileSync('setfattr', ['-n', 'system.posix_acl_access', '-v', `0x${acl(HOST + 1234).toString('hex')}`, join(dir, 'acl')]);
    execFileSync('mknod', [join(dir, 'whiteout'), 'c', '0', '0']);

    await shiftOwnersBack(dir, HOST, USERNS_RANGE_SIZE);

    const owner = (p: string) => {
      const s = lstatSync(join(dir, p));
      return `${s.uid}:${s.gid} ${(s.mode & 0o7777).toString(8)}`;
    };
    expect(owner('.')).toMatch(/^0:0 /);
    expect(owner('d')).toMatch(/^1000:1000 /);
    expect(owner('d/suid')).toBe('0:50 4755');
    expect(owner('d/suid-link')).toBe('0:50 4755');
    expect(owner('link')).toMatch(/^7:8 /);
    expect(owner('whiteout')).toMatch(/^0:0 /);
    // v2: the same capabilities, no namespace root.
    expect(xattrHex(join(dir, 'cap'), 'security.capability')).toBe('0100000200040000000000000000000000000000');
    expect(xattrHex(join(dir, 'acl'), 'system.posix_acl_access')).toBe(acl(1234).toString('hex'));
  });

  it('names a path owned outside the range rather than guessing', async () => {
    chownSync(dir, HOST, HOST);
    writeFileSync(join(dir, 'host-root'), '');
    await expect(shiftOwnersBack(dir, HOST, USERNS_RANGE_SIZE)).rejects.toThrow(`${join(dir, 'host-root')} is owned by host 0:0, outside the step's user namespace range`);
  });
});

describe('UserNamespaces', () => {
  let root: string;
  const pools: UserNamespaces[] = [];
  beforeEach(() => {
    root = tempDir('userns');
    // runc enters the steps' directories under the state directory as an unprivileged uid.
    chmodSync(root, 0o711);
    mkdirSync(join(root, 'layers'));
  });
  afterEach(async () => {
    for (const pool of pools.splice(0)) await pool.close();
    rmSync(root, { recursive: true, force: true });
  });

  const pool = async (name: string, base = 2 ** 30, ranges = 4, makeAhead = false) => {
    const p = new UserNamespaces({ base, ranges, root: join(root, name), layersDir: join(root, 'layers'), stateDir: join(root, 'state'), makeAhead });
    mkdirSync(join(root, name), { recursive: true });
    pools.push(p);
    await p.init();
    return p;
  };

  it('gives steps that run at once disjoint ranges across workers and bases, and shows the layer store through each range', async () => {
    const base = 2 ** 30;
    // Two workers whose pools overlap in one range: a holds base and base+1 blocks, b base+1 and base+2.
    const a = await pool('a', base, 2);
    const b = await pool('b', base + USERNS_RANGE_SIZE, 2);
    mkdirSync(join(root, 'layers', 'x', 'fs'), { recursive: true });
    writeFileSync(join(root, 'layers', 'x', 'fs', 'f'), '');
    chownSync(join(root, 'layers', 'x', 'fs', 'f'), 1000, 1000);
    const steps = [await a.step(), await a.step()];
    expect(steps.map((s) => s.hostId).sort()).toEqual([base, base + USERNS_RANGE_SIZE]);
    steps.push(await b.step());
    expect(steps[2]!.hostId).toBe(base + 2 * USERNS_RANGE_SIZE);
    await expect(a.step()).rejects.toThrow(`no free user namespace range: all 2 ranges of STRATA_USERNS_BASE=${base} are held by steps running on this host`);
    await expect(b.step()).rejects.toThrow('no free user namespace range');
    for (const step of steps) {
      expect(lstatSync(join(step.layersView, 'x', 'fs', 'f')).uid).toBe(step.hostId + 1000);
      expect(lstatSync(step.dir).uid).toBe(step.hostId);
    }
    // The shared range, freed by a's step, is b's to take.
    const shared = steps.find((s) => s.hostId === base + USERNS_RANGE_SIZE)!;
    await shared.release();
    const next = await b.step();
    expect(next.hostId).toBe(base + USERNS_RANGE_SIZE);
    for (const step of [...steps, next]) await step.release();
  });

  it('gives a step a range whose namespace the worker already made, when one is free', async () => {
    const base = 2 ** 30;
    const a = await pool('a', base, 4);
    // init() made range 0's namespace (its probe ran a step there): steps one after another stay on it.
    for (let i = 0; i < 3; i++) {
      const step = await a.step();
      expect(step.hostId).toBe(base);
      await step.release();
    }
    // Two at once: the second gets a new range; both are then reused, and a third at once is new again.
    const [s1, s2] = [await a.step(), await a.step()];
    expect([s1!.hostId, s2!.hostId]).toEqual([base, base + USERNS_RANGE_SIZE]);
    await s1!.release();
    await s2!.release();
    const again = [await a.step(), await a.step(), await a.step()];
    expect(again.map((s) => s.hostId)).toEqual([base, base + USERNS_RANGE_SIZE, base + 2 * USERNS_RANGE_SIZE]);
    for (const step of again) await step.release();
  });

  it('makes the next step ahead while one runs, still refuses steps beyond the pool, and gives the one made ahead back on close', async () => {
    const base = 2 ** 30;
    const claims = () => readdirSync(join(root, 'state', 'claims')).sort();
    const until = async (what: () => boolean) => {
      for (let i = 0; i < 200 && !what(); i++) await new Promise((r) => setTimeout(r, 10));
      return what();
    };
    const a = await pool('a', base, 2, true);
    // Made ahead as init ends: one range claimed while no step runs.
    expect(await until(() => claims().length === 1)).toBe(true);
    const first = await a.step();
    expect(lstatSync(first.dir).uid).toBe(first.hostId);
    // The other range is claimed for the next step as this one runs.
    expect(await until(() => claims().length === 2)).toBe(true);
    const second = await a.step();
    expect(second.hostId).not.toBe(first.hostId);
    // The pool (2 ranges) is full: nothing made ahead, and a third step is refused as before.
    await expect(a.step()).rejects.toThrow('no free user namespace range: all 2 ranges');
    await first.release();
    const third = await a.step();
    expect(third.hostId).toBe(first.hostId);
    await second.release();
    await third.release();
    expect(await until(() => claims().length === 1)).toBe(true);
    await a.close();
    expect(claims()).toEqual([]);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(join(root, 'a', 'userns'));
  });

  it('refuses to start where runc could not enter a step directory, naming it', async () => {
    chmodSync(root, 0o700);
    await expect(pool('a')).rejects.toThrow(`${root} (mode 700) cannot be entered by other users`);
  });

  it('takes over a range whose claim a killed worker left', async () => {
    const a = await pool('a', 2 ** 30, 1);
    mkdirSync(join(root, 'state', 'claims'), { recursive: true });
    writeFileSync(join(root, 'state', 'claims', String(2 ** 30 / USERNS_RANGE_SIZE)), JSON.stringify({ pid: 999_999_999, started: '1' }));
    // ...with its step's directory and the rootfs bind mounted in it.
    const left = join(root, 'state', 'steps', `${2 ** 30}-deadbeef0000`);
    mkdirSync(join(left, 'rootfs'), { recursive: true });
    mkdirSync(join(root, 'somewhere'));
    writeFileSync(join(root, 'somewhere', 'kept'), 'x');
    execFileSync('mount', ['--bind', join(root, 'somewhere'), join(left, 'rootfs')]);
    await a.init();
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(left);
    expect(() => lstatSync(left)).toThrow();
    expect(readFileSync(join(root, 'somewhere', 'kept'), 'utf8')).toBe('x');
    const step = await a.step();
    expect(step.hostId).toBe(2 ** 30);
    expect(JSON.parse(readFileSync(join(root, 'state', 'claims', String(2 ** 30 / USERNS_RANGE_SIZE)), 'utf8')).pid).toBe(process.pid);
    await step.release();
  });
});
