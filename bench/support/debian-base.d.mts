// Types for debian-base.mjs, so TypeScript tests (test/differential) use the same Debian base as the benchmarks.
export declare const DEBIAN_SUITE: string;

export interface DebianBaseTar {
  tar: string;
  bytes: number;
  cached: boolean;
  made?: string;
  suite?: string;
  mirror?: string;
  debootstrapSeconds?: number;
}

export declare function debianBaseTar(cacheDir: string, options?: { suite?: string; log?: (line: string) => void }): DebianBaseTar;
