/** Layer whiteout conventions (image-spec layer.md). */
export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_WHITEOUT = '.wh..wh..opq';

export type WhiteoutKind =
  | { kind: 'opaque'; directory: string }
  | { kind: 'whiteout'; removed: string };

/**
 * Classifies a layer path: `a/.wh.b` removes `a/b` from lower layers, `a/.wh..wh..opq`
 * hides all of `a`'s lower-layer children. Returns null for ordinary entries.
 */
export function parseWhiteout(layerPath: string): WhiteoutKind | null {
  const trimmed = layerPath.replace(/\/+$/, '');
  const slash = trimmed.lastIndexOf('/');
  const dir = slash === -1 ? '' : trimmed.slice(0, slash);
  const base = trimmed.slice(slash + 1);
  if (base === OPAQUE_WHITEOUT) return { kind: 'opaque', directory: dir };
  if (base.startsWith(WHITEOUT_PREFIX) && base.length > WHITEOUT_PREFIX.length) {
    return { kind: 'whiteout', removed: dir === '' ? base.slice(WHITEOUT_PREFIX.length) : `${dir}/${base.slice(WHITEOUT_PREFIX.length)}` };
  }
  return null;
}
