import { tagNameProblem } from '@strata/oci';

/** Placeholders a rule's tag template may use; `{1}`…`{9}` are the ref pattern's capture groups. */
const PLACEHOLDER = /\{([a-z_]+|[1-9])\}/g;
const NAMED = new Set(['branch', 'tag', 'sha', 'short_sha']);

export interface TagValues {
  branch: string;
  tag: string;
  sha: string;
  /** Capture groups 0..9 of the rule's ref pattern. */
  groups: string[];
}

/** What is wrong with a template, or null: unknown placeholders and characters a tag cannot hold. */
export function tagTemplateProblem(template: string): string | null {
  if (template.length === 0 || template.length > 128) return `tag template "${template}" must be 1 to 128 characters long`;
  const unknown = [...template.matchAll(/\{([^}]*)\}/g)].map((m) => m[1]).find((name) => !NAMED.has(name) && !/^[1-9]$/.test(name));
  if (unknown !== undefined) return `tag template "${template}" uses {${unknown}}; use {branch}, {tag}, {sha}, {short_sha} or {1} to {9}`;
  const literal = template.replace(PLACEHOLDER, 'x');
  if (/[{}]/.test(literal)) return `tag template "${template}" has an unmatched brace`;
  const problem = tagNameProblem(literal);
  return problem ? `tag template "${template}": ${problem}` : null;
}

/**
 * The tag a template gives for a push. A value is made tag-safe (a branch `feature/x` gives
 * `feature-x`); the result is checked as a tag, and null means it cannot be one.
 */
export function renderTag(template: string, v: TagValues): { tag: string } | { problem: string } {
  const safe = (s: string) => s.replace(/[^A-Za-z0-9_.-]/g, '-');
  const out = template.replace(PLACEHOLDER, (_m, name: string) => {
    if (name === 'branch') return safe(v.branch);
    if (name === 'tag') return safe(v.tag);
    if (name === 'sha') return v.sha;
    if (name === 'short_sha') return v.sha.slice(0, 7);
    return safe(v.groups[Number(name)] ?? '');
  });
  const problem = tagNameProblem(out);
  return problem ? { problem: `tag template "${template}" gives "${out.slice(0, 200)}", not a tag: ${problem}` } : { tag: out };
}
