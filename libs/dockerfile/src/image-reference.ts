// The grammar of an image reference (distribution/reference): `[host[:port]/]path[:tag][@digest]`.
// FROM checks it in the plan and the InvalidDefaultArgInFrom lint checks it on ARG defaults.

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN_COMPONENT = /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$/;
const TAG = /^\w[\w.-]{0,127}$/;
const DIGEST = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}$/;

/** Whether `ref` is a valid image reference (`name[:tag][@digest]`, optional registry host). */
export function isValidImageReference(ref: string): boolean {
  let rest = ref;
  const at = rest.indexOf('@');
  if (at >= 0) {
    if (!DIGEST.test(rest.slice(at + 1))) return false;
    rest = rest.slice(0, at);
  }
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    if (!TAG.test(rest.slice(colon + 1))) return false;
    rest = rest.slice(0, colon);
  }
  if (rest === '' || rest.length > 255) return false;
  const parts = rest.split('/');
  if (parts.length > 1 && (parts[0].includes('.') || parts[0].includes(':') || parts[0] === 'localhost' || /[A-Z]/.test(parts[0]))) {
    const [host, port] = parts[0].split(':', 2);
    if (port !== undefined && !/^[0-9]+$/.test(port)) return false;
    if (!host.split('.').every((c) => DOMAIN_COMPONENT.test(c))) return false;
    parts.shift();
  }
  return parts.every((p) => COMPONENT.test(p));
}
