import { IgnoreMatcher, parseDockerignore } from '@strata/build-engine';
import type { Push } from '../hooks/push-event.js';
import { RefPattern } from './ref-pattern.js';
import { renderTag } from './tag-template.js';

export interface TriggerRule {
  /** A regular expression matched against the whole ref (`refs/heads/main`, `refs/tags/v1.2.0`). */
  ref: string;
  /** Tag templates: {branch} {tag} {sha} {short_sha} {1}..{9}. */
  tags: string[];
}

/** Path filters over a push's changed files, in .dockerignore pattern syntax (`src/**`, `*.md`). */
export interface PathFilter {
  include?: string[];
  exclude?: string[];
}

export type PushDecision = { outcome: 'build'; tags: string[] } | { outcome: 'skipped'; reason: string };

const SKIP_CI = /\[(skip ci|ci skip)\]/i;

/** A matcher that answers whether a path is matched by any of the patterns (a directory pattern matches below it). */
export function pathMatcher(patterns: readonly string[]): IgnoreMatcher {
  return new IgnoreMatcher(parseDockerignore(patterns.join('\n')));
}

/**
 * What a push to a trigger leads to: a build with its tags, or a skip with the reason recorded on
 * the delivery. Rules are tried in order; the first whose pattern matches the whole ref decides.
 */
export function decidePush(rules: readonly TriggerRule[], paths: PathFilter | null, push: Push): PushDecision {
  if (push.deleted || !push.sha) return { outcome: 'skipped', reason: `${push.ref} was deleted; nothing to build` };
  let matched: { rule: TriggerRule; groups: string[] } | null = null;
  for (const rule of rules) {
    const groups = RefPattern.compile(rule.ref).match(push.ref);
    if (groups) {
      matched = { rule, groups };
      break;
    }
  }
  if (!matched) return { outcome: 'skipped', reason: `no rule matches ${push.ref}` };
  const skip = SKIP_CI.exec(push.message);
  if (skip) return { outcome: 'skipped', reason: `the head commit's message says ${skip[0]}` };
  const isTag = push.ref.startsWith('refs/tags/');
  // Path filters judge branch pushes by their changed files; a tag is a release and always builds.
  if (!isTag && paths && push.files !== null && (paths.include?.length || paths.exclude?.length)) {
    const include = paths.include?.length ? pathMatcher(paths.include) : null;
    const exclude = paths.exclude?.length ? pathMatcher(paths.exclude) : null;
    const relevant = push.files.filter((f) => (include ? include.ignores(f) : true) && !(exclude?.ignores(f) ?? false));
    if (relevant.length === 0) return { outcome: 'skipped', reason: `none of the ${push.files.length} changed file(s) passes the trigger's path filters` };
  }
  const values = {
    branch: push.ref.startsWith('refs/heads/') ? push.ref.slice('refs/heads/'.length) : '',
    tag: isTag ? push.ref.slice('refs/tags/'.length) : '',
    sha: push.sha,
    groups: matched.groups,
  };
  const tags: string[] = [];
  for (const template of matched.rule.tags) {
    const r = renderTag(template, values);
    if ('problem' in r) return { outcome: 'skipped', reason: r.problem };
    if (!tags.includes(r.tag)) tags.push(r.tag);
  }
  return { outcome: 'build', tags };
}
