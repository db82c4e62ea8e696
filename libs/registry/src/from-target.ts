import { parseImageReference } from '@strata/oci';

const DOCKER_HUB_HOSTS = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

/** Where a FROM name leads, before anything is looked up. `at` is `:tag` or `@digest` as shown in messages. */
export type FromTarget =
  /** A short name: the tenant's repository, else `upstream` when the deployment has one. */
  | { kind: 'tenant'; repository: string; reference: string; at: string; upstream: { host: string; repository: string } | null }
  /** Strata's own public host: `<tenant>/<repository>` resolved internally. */
  | { kind: 'own-host'; host: string; name: string; reference: string; at: string }
  /** Any other host: pulled from that registry. */
  | { kind: 'pull'; host: string; repository: string; reference: string; at: string };

/**
 * The rule that resolves FROM names. A reference with a registry host is pulled from that host
 * (Docker Hub's aliases go to registry-1.docker.io, `library/` before one-component names), except
 * Strata's own public host, which resolves internally. A short name (`busybox:1`, `team/app`) is
 * the tenant's own repository of that name when one exists, otherwise the upstream registry.
 */
export function fromTarget(ref: string, settings: { ownHost: string | null; upstreamRegistry: string | null }): FromTarget {
  const parsed = parseImageReference(ref);
  const reference = parsed.digest ?? parsed.tag ?? 'latest';
  const at = parsed.digest ? `@${parsed.digest}` : `:${reference}`;
  const dockerHubName = (repository: string) => (repository.includes('/') ? repository : `library/${repository}`);
  if (parsed.registry) {
    if (settings.ownHost !== null && settings.ownHost.toLowerCase() === parsed.registry.toLowerCase()) {
      return { kind: 'own-host', host: parsed.registry, name: parsed.repository, reference, at };
    }
    if (DOCKER_HUB_HOSTS.has(parsed.registry.toLowerCase())) {
      return { kind: 'pull', host: 'registry-1.docker.io', repository: dockerHubName(parsed.repository), reference, at };
    }
    return { kind: 'pull', host: parsed.registry, repository: parsed.repository, reference, at };
  }
  const upstream = settings.upstreamRegistry === null ? null : { host: settings.upstreamRegistry, repository: dockerHubName(parsed.repository) };
  return { kind: 'tenant', repository: parsed.repository, reference, at, upstream };
}
