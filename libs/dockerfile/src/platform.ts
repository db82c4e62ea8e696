/** An OCI platform. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** The platform builds use when none is given. */
export const DEFAULT_PLATFORM: Platform = { os: 'linux', architecture: 'amd64' };

/** `os/arch[/variant]`, as BuildKit's TARGETPLATFORM and BUILDPLATFORM show it. */
export function formatPlatform(p: Platform): string {
  return p.variant ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}

const KNOWN_OS = new Set(['linux', 'windows', 'darwin', 'freebsd', 'netbsd', 'openbsd', 'solaris', 'illumos', 'android', 'ios', 'aix', 'plan9', 'js', 'wasip1', 'dragonfly']);
const ARCH_ALIASES: Record<string, Platform['architecture']> = { x86_64: 'amd64', 'x86-64': 'amd64', aarch64: 'arm64', i386: '386', i686: '386', armhf: 'arm', armel: 'arm' };

/**
 * Parses `linux/arm64`, `linux/arm/v7`, `linux` or `arm64` the way containerd's platforms.Parse
 * reads the common cases (lower-cased, x86_64 → amd64, aarch64 → arm64). Returns null when invalid.
 */
export function parsePlatform(s: string, defaults: Platform = DEFAULT_PLATFORM): Platform | null {
  const parts = s.toLowerCase().split('/');
  if (parts.some((p) => !/^[a-z0-9_.-]+$/.test(p)) || parts.length > 3) return null;
  const arch = (a: string): string => ARCH_ALIASES[a] ?? a;
  if (parts.length === 1) {
    if (KNOWN_OS.has(parts[0])) return parts[0] === defaults.os ? { ...defaults } : { os: parts[0], architecture: defaults.architecture };
    return { os: defaults.os, architecture: arch(parts[0]) };
  }
  if (!KNOWN_OS.has(parts[0])) return null;
  const p: Platform = { os: parts[0], architecture: arch(parts[1]) };
  const variant = parts[2] ?? (parts[1] === 'armhf' ? 'v7' : parts[1] === 'armel' ? 'v6' : undefined);
  if (variant) p.variant = variant;
  return p;
}

/** Names of the platform ARGs BuildKit predefines. */
export const PLATFORM_ARG_NAMES = [
  'TARGETPLATFORM', 'TARGETOS', 'TARGETARCH', 'TARGETVARIANT',
  'BUILDPLATFORM', 'BUILDOS', 'BUILDARCH', 'BUILDVARIANT',
] as const;

/** Proxy ARGs usable as build args without an ARG instruction (not part of cache keys). */
export const PROXY_ARG_NAMES = [
  'HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy', 'FTP_PROXY', 'ftp_proxy', 'NO_PROXY', 'no_proxy', 'ALL_PROXY', 'all_proxy',
] as const;

/** The values of the predefined platform ARGs for a target and build platform. */
export function platformArgs(target: Platform, build: Platform): Map<string, string> {
  return new Map<string, string>([
    ['TARGETPLATFORM', formatPlatform(target)],
    ['TARGETOS', target.os],
    ['TARGETARCH', target.architecture],
    ['TARGETVARIANT', target.variant ?? ''],
    ['BUILDPLATFORM', formatPlatform(build)],
    ['BUILDOS', build.os],
    ['BUILDARCH', build.architecture],
    ['BUILDVARIANT', build.variant ?? ''],
  ]);
}
