import { CLONE_NAMESPACE_FLAGS, seccompProfile } from './seccomp-profile.js';
import { DEFAULT_CAPABILITIES, buildRuntimeSpec } from './runtime-spec.js';

const allowedBy = (profile: ReturnType<typeof seccompProfile>): string[] =>
  profile.syscalls.filter((rule) => rule.action === 'SCMP_ACT_ALLOW' && !rule.args).flatMap((rule) => rule.names);

describe('the seccomp profile of a sandboxed step', () => {
  const sandboxed = seccompProfile({ capabilities: DEFAULT_CAPABILITIES, arch: 'x64', kernelRelease: '6.18.44' });

  it('fails every syscall it does not list with EPERM, for the x86 ABIs a process may use', () => {
    expect(sandboxed.defaultAction).toBe('SCMP_ACT_ERRNO');
    expect(sandboxed.defaultErrnoRet).toBe(1);
    expect(sandboxed.architectures).toEqual(['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32']);
  });

  it('lists what ordinary programs call and none of the shared-kernel syscalls Docker keeps out', () => {
    const allowed = allowedBy(sandboxed);
    for (const name of ['read', 'execve', 'openat', 'fchownat', 'mknodat', 'chroot', 'setresuid', 'socket', 'arch_prctl', 'ptrace']) expect(allowed).toContain(name);
    for (const name of ['mount', 'umount2', 'unshare', 'setns', 'init_module', 'finit_module', 'keyctl', 'add_key', 'request_key', 'bpf', 'reboot', 'kexec_load', 'open_by_handle_at', 'perf_event_open', 'io_uring_setup', 'userfaultfd', 'clone', 'clone3']) {
      expect(allowed).not.toContain(name);
    }
  });

  it('allows clone only without namespace flags, and answers clone3 with ENOSYS so libc falls back to clone', () => {
    expect(sandboxed.syscalls).toContainEqual({ names: ['clone'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }] });
    expect(CLONE_NAMESPACE_FLAGS).toBe(0x7e020000);
    expect(sandboxed.syscalls).toContainEqual({ names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: 38 });
  });

  it('sends mknod and mknodat to the mknod agent in a user namespace, and nothing else', () => {
    expect(sandboxed.listenerPath).toBeUndefined();
    expect(sandboxed.syscalls.some((rule) => rule.action === 'SCMP_ACT_NOTIFY')).toBe(false);
    const userns = seccompProfile({ capabilities: DEFAULT_CAPABILITIES, arch: 'x64', kernelRelease: '6.18.44', mknodListener: '/run/agent.sock' });
    expect(userns.listenerPath).toBe('/run/agent.sock');
    expect(userns.syscalls.filter((rule) => rule.action === 'SCMP_ACT_NOTIFY')).toEqual([{ names: ['mknod', 'mknodat'], action: 'SCMP_ACT_NOTIFY' }]);
    expect(allowedBy(userns)).not.toContain('mknod');
    expect(allowedBy(userns)).not.toContain('mknodat');
    expect(allowedBy(userns).length).toBe(allowedBy(sandboxed).length - 2);
  });

  it('allows personality only for the Linux personalities', () => {
    const values = sandboxed.syscalls.filter((rule) => rule.names[0] === 'personality').map((rule) => rule.args?.[0]?.value);
    expect(values).toEqual([0, 8, 0x20000, 0x20008, 0xffffffff]);
  });

  it('adds the syscalls a capability unlocks when the step holds it', () => {
    const admin = seccompProfile({ capabilities: [...DEFAULT_CAPABILITIES, 'CAP_SYS_ADMIN', 'CAP_SYS_MODULE'], arch: 'x64', kernelRelease: '6.18.44' });
    const allowed = allowedBy(admin);
    for (const name of ['mount', 'unshare', 'setns', 'clone', 'clone3', 'init_module', 'finit_module']) expect(allowed).toContain(name);
    expect(admin.syscalls.some((rule) => rule.names.includes('clone') && rule.args)).toBe(false);
  });

  it('leaves ptrace out on kernels before 4.8, where a tracer could step around the filter', () => {
    expect(allowedBy(seccompProfile({ capabilities: DEFAULT_CAPABILITIES, arch: 'x64', kernelRelease: '4.4.0' }))).not.toContain('ptrace');
  });

  it('uses the arm ABIs and syscalls on arm64 workers', () => {
    const arm = seccompProfile({ capabilities: DEFAULT_CAPABILITIES, arch: 'arm64', kernelRelease: '6.1.0' });
    expect(arm.architectures).toEqual(['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM']);
    expect(allowedBy(arm)).toContain('set_tls');
    expect(allowedBy(arm)).not.toContain('arch_prctl');
  });
});

describe('the runtime spec of a step', () => {
  const input = {
    rootfs: '/r', args: ['true'], env: [], cwd: '/', user: { uid: 0, gid: 0, additionalGids: [], home: '/root' },
    hostname: 'h', netns: { kind: 'new' as const }, hostsFile: '/h', resolvConfFile: '/rc', mounts: [], cgroupsPath: 'c', noFile: { soft: 1, hard: 1 },
  };

  it('sandboxes a plain step: seccomp, no-new-privileges, Docker\'s capabilities without NET_RAW, ICMP datagram sockets for ping', () => {
    const spec = buildRuntimeSpec(input) as { process: { noNewPrivileges: boolean; capabilities: { bounding: string[] } }; linux: Record<string, unknown> };
    expect(spec.process.noNewPrivileges).toBe(true);
    expect(spec.process.capabilities.bounding).not.toContain('CAP_NET_RAW');
    expect(spec.process.capabilities.bounding).toContain('CAP_CHOWN');
    expect(spec.linux.seccomp).toMatchObject({ defaultAction: 'SCMP_ACT_ERRNO' });
    expect(spec.linux.sysctl).toEqual({ 'net.ipv4.ping_group_range': '0 2147483647' });
    expect(spec.linux.maskedPaths).toContain('/proc/kcore');
    expect(spec.linux.readonlyPaths).toContain('/proc/sysrq-trigger');
  });

  it('runs a `--security=insecure` step unconfined, as BuildKit does', () => {
    const spec = buildRuntimeSpec({ ...input, privileged: { capabilities: ['CAP_SYS_ADMIN'] } }) as { process: { noNewPrivileges: boolean }; linux: Record<string, unknown> };
    expect(spec.process.noNewPrivileges).toBe(false);
    expect(spec.linux.seccomp).toBeUndefined();
    expect(spec.linux.maskedPaths).toEqual([]);
  });

  it('sets no network sysctl when the step shares the host network', () => {
    const spec = buildRuntimeSpec({ ...input, netns: { kind: 'host' } }) as { linux: Record<string, unknown> };
    expect(spec.linux.sysctl).toBeUndefined();
  });
});
