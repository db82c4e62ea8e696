import type { PrismaClient } from '@strata/db';
import type { Descriptor, Digest, ImageConfig } from '@strata/oci';
import { type FromTarget, fromTarget } from './from-target.js';
import { ImageNotFoundError, type ImageStore } from './image-store.js';
import { splitName } from './path.js';
import { type PullBlobStore, type PullStats, RegistryClient, RegistryPullError } from './registry-client.js';
import type { RegistryAuth } from './registry-credentials.js';

/** A FROM image as the build engine takes it (build-engine's BaseImage). */
export interface ResolvedFromImage {
  /** The reference as resolved, e.g. `busybox:1` or `127.0.0.1:5000/library/busybox:1`. */
  ref: string;
  /** Where it came from: the tenant's own repository or a registry. */
  source: 'tenant' | 'registry';
  manifestDigest: Digest;
  config: ImageConfig;
  layers: Descriptor[];
}

/** What FROM resolution needs of the deployment's settings (STRATA_PUBLIC_URL, STRATA_UPSTREAM_REGISTRY...). */
export interface ResolverSettings {
  publicUrl: string;
  pull: {
    /** null when short names resolve only to the tenant's repositories. */
    upstreamRegistry: string | null;
    insecureRegistries: string[];
    /** How long a registry may take to start answering (STRATA_PULL_TIMEOUT_MS); RegistryClient's default when absent. */
    responseTimeoutMs?: number;
  };
}

/**
 * FROM resolution for one tenant's build, by the rule of `fromTarget`: the own host gives
 * `<tenant>/<repository>` (the build's own tenant, or a public repository of another).
 *
 * Pulls re-resolve a tag on every build, as BuildKit does (a moved tag is seen at once); a digest
 * reference whose manifest is stored needs no request at all. Manifests, configs and layers go to
 * the blob store verified against their digests, and blobs already stored are never fetched again.
 */
export class TenantImageResolver {
  private readonly client: RegistryClient | null;

  constructor(
    private readonly images: ImageStore,
    private readonly tenantId: string,
    private readonly pull?: {
      prisma: PrismaClient;
      blobs: PullBlobStore;
      settings: ResolverSettings;
      credentials?: RegistryAuth;
      /** Told what a pull fetched, for the build log. */
      onPull?: (ref: string, stats: PullStats) => void;
      client?: RegistryClient;
      /** The build's stop signal: a cancelled build stops its pulls. */
      signal?: AbortSignal;
    },
  ) {
    this.client = pull
      ? (pull.client ??
        new RegistryClient({
          insecureRegistries: pull.settings.pull.insecureRegistries,
          responseTimeoutMs: pull.settings.pull.responseTimeoutMs,
          credentials: (host) => pull.credentials?.[host.toLowerCase()],
          userAgent: 'strata-worker',
        }))
      : null;
  }

  async resolve(ref: string): Promise<ResolvedFromImage> {
    let target: FromTarget;
    try {
      target = fromTarget(ref, { ownHost: this.pull ? ownHost(this.pull.settings.publicUrl) : null, upstreamRegistry: this.pull?.settings.pull.upstreamRegistry ?? null });
    } catch (e) {
      throw new Error((e as Error).message);
    }
    if (target.kind === 'own-host') return this.resolveOwnHost(target.host, target.name, target.reference, target.at);
    if (target.kind === 'pull') return this.pullImage(target.host, target.repository, target.reference, target.at);
    try {
      return await this.fromTenant(this.tenantId, target.repository, target.reference, `${target.repository}${target.at}`, 'tenant');
    } catch (e) {
      if (!(e instanceof ImageNotFoundError)) throw e;
      // A repository of that name that lacks the tag is still the tenant's: no fallback upstream.
      const repoExists =
        this.pull !== undefined &&
        (await this.pull.prisma.repository.findUnique({ where: { tenantId_name: { tenantId: this.tenantId, name: target.repository } }, select: { id: true } })) !== null;
      if (repoExists || target.upstream === null) {
        throw new Error(`${e.message} (import a base image with POST /v1/repositories/{name}/import, or build it first)`);
      }
    }
    const { host, repository } = target.upstream;
    return this.pullImage(host, repository, target.reference, target.at, ` (no repository "${target.repository}" of your own, so it was looked up in ${host})`);
  }

  private async resolveOwnHost(host: string, name: string, reference: string, at: string): Promise<ResolvedFromImage> {
    const parts = splitName(name);
    if (!parts) throw new Error(`"${host}/${name}" names no repository: images here are <tenant>/<repository>`);
    const tenant = await this.pull!.prisma.tenant.findUnique({ where: { name: parts.tenantName }, select: { id: true } });
    const own = tenant?.id === this.tenantId;
    let visible = own;
    if (tenant && !own) {
      const repo = await this.pull!.prisma.repository.findFirst({ where: { tenantId: tenant.id, name: parts.repository, public: true }, select: { id: true } });
      visible = repo !== null;
    }
    // Another tenant's private repository reads as not existing, as the registry answers it.
    if (!tenant || !visible) throw new Error(`"${host}/${name}" does not exist or is not readable by this tenant`);
    try {
      return await this.fromTenant(tenant.id, parts.repository, reference, `${host}/${name}${at}`, own ? 'tenant' : 'registry');
    } catch (e) {
      if (e instanceof ImageNotFoundError) throw new Error(`"${host}/${name}${at}" does not exist`);
      throw e;
    }
  }

  private async fromTenant(tenantId: string, repository: string, reference: string, shownRef: string, source: ResolvedFromImage['source']): Promise<ResolvedFromImage> {
    const image = await this.images.resolve(tenantId, repository, reference);
    return { ref: shownRef, source, manifestDigest: image.manifestDigest, config: image.config, layers: image.manifest.layers };
  }

  private async pullImage(host: string, repository: string, reference: string, at: string, why = ''): Promise<ResolvedFromImage> {
    const { blobs, onPull, signal } = this.pull!;
    const shown = `${host}/${repository}${at}`;
    try {
      const image = await this.client!.resolve(host, repository, reference, blobs, signal);
      const stats = await this.client!.pullBlobs(host, repository, image.manifest.layers, blobs, signal);
      onPull?.(shown, stats);
      return { ref: shown, source: 'registry', manifestDigest: image.manifestDigest, config: image.config, layers: image.manifest.layers };
    } catch (e) {
      if (e instanceof RegistryPullError) throw new Error(`pulling ${shown} failed: ${e.message}${why}`);
      throw e;
    }
  }
}

/** The host of Strata's public URL (`127.0.0.1:3000`), or null when it is not a URL. */
function ownHost(publicUrl: string): string | null {
  try {
    return new URL(publicUrl).host;
  } catch {
    return null;
  }
}
