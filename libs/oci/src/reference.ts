/**
 * Image names and tags as the OCI Distribution spec's grammar defines them, and parsing of image
 * references as written in FROM lines (`busybox`, `team/app:1.2`, `host:5000/ns/app@sha256:...`).
 */
const COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
export const REPOSITORY_NAME = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
export const TAG_NAME = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
const DIGEST = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/** Why a repository name is invalid, or null when it is valid. */
export function repositoryNameProblem(name: string): string | null {
  if (name.length === 0) return 'the repository name is empty';
  if (name.length > 255) return `the repository name is ${name.length} characters long; at most 255 are allowed`;
  if (!REPOSITORY_NAME.test(name)) {
    return `"${name}" is not a valid repository name: use lowercase letters, digits and separators (. _ __ -), in path components separated by /`;
  }
  return null;
}

/** Why a tag is invalid, or null when it is valid. */
export function tagNameProblem(tag: string): string | null {
  if (!TAG_NAME.test(tag)) {
    return `"${tag}" is not a valid tag: up to 128 letters, digits, _, . and -, not starting with . or -`;
  }
  return null;
}

export interface ImageReference {
  /** Registry host (with port) when the reference names one, e.g. `127.0.0.1:5000`, `docker.io`. */
  registry: string | null;
  /** Repository path without the registry, e.g. `library/busybox` or `team/app`. */
  repository: string;
  tag: string | null;
  digest: string | null;
}

/** Parses a reference like docker does; a first component with `.` or `:` or `localhost` is a registry host. */
export function parseImageReference(ref: string): ImageReference {
  let rest = ref;
  let digest: string | null = null;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw new Error(`"${ref}" has an invalid digest "${digest}"`);
  }
  let tag: string | null = null;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    const problem = tagNameProblem(tag);
    if (problem) throw new Error(`"${ref}" has an invalid tag: ${problem}`);
  }
  let registry: string | null = null;
  const firstSlash = rest.indexOf('/');
  if (firstSlash > 0) {
    const first = rest.slice(0, firstSlash);
    if (first.includes('.') || first.includes(':') || first === 'localhost') {
      registry = first;
      rest = rest.slice(firstSlash + 1);
    }
  }
  const problem = repositoryNameProblem(rest);
  if (problem) throw new Error(`"${ref}" is not a valid image reference: ${problem}`);
  return { registry, repository: rest, tag, digest };
}
