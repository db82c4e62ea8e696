import { BadRequestException } from '@nestjs/common';
import { PatternSyntaxError } from '@strata/build-engine';
import { repositoryNameProblem } from '@strata/oci';
import { PROVIDERS, type Provider } from '../hooks/signatures.js';
import { RefPattern, RefPatternError } from './ref-pattern.js';
import { tagTemplateProblem } from './tag-template.js';
import { pathMatcher, type PathFilter, type TriggerRule } from './trigger-rules.js';

export interface TriggerCredentials {
  /** For HTTPS clone URLs: a token, sent with `username` (default per provider) as basic auth; also used for commit statuses. */
  token?: string;
  username?: string;
  /** For ssh clone URLs: a private key in OpenSSH format. */
  deployKey?: string;
}

export interface TriggerInput {
  repository: string;
  provider: Provider;
  cloneUrl: string;
  apiUrl: string | null;
  secret: string;
  rules: TriggerRule[];
  dockerfile: string;
  context: string;
  buildArgs: Record<string, string>;
  target: string | null;
  paths: PathFilter | null;
  submodules: boolean;
  credentials: TriggerCredentials | null;
}

const FIELDS = ['repository', 'provider', 'cloneUrl', 'apiUrl', 'secret', 'rules', 'dockerfile', 'context', 'buildArgs', 'target', 'paths', 'submodules', 'credentials'];

function fail(message: string): never {
  throw new BadRequestException(message);
}

function text(v: unknown, field: string, max = 4096): string {
  if (typeof v !== 'string' || v.length === 0) fail(`"${field}" must be a non-empty string.`);
  if (v.length > max) fail(`"${field}" is longer than ${max} characters.`);
  return v;
}

/** A path inside the checkout: relative, no `..`, no NUL. */
function innerPath(v: unknown, field: string): string {
  const p = text(v, field, 1024).replace(/^\.\/+/, '');
  if (p.startsWith('/') || p.split('/').includes('..') || p.includes('\0')) fail(`"${field}" must be a path inside the repository, like "." or "docker/app", got "${p}".`);
  return p === '' ? '.' : p;
}

/** http(s) URLs, ssh://host/path and scp-like user@host:path; never credentials inside the URL. */
export function cloneUrlProblem(url: string): string | null {
  if (/^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:(?!\/\/)[^\s]+$/.test(url)) return null;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return `"${url}" is not a URL; use https://host/owner/repo.git or git@host:owner/repo.git`;
  }
  if (!['http:', 'https:', 'ssh:'].includes(u.protocol)) return `${u.protocol} clone URLs are not supported; use https or ssh`;
  if (u.password || (u.username && u.protocol !== 'ssh:')) return 'the clone URL must not hold credentials; give them in "credentials"';
  return null;
}

function patterns(v: unknown, field: string): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.length > 100 || v.some((p) => typeof p !== 'string' || p.length === 0 || p.length > 256)) {
    fail(`"${field}" must be a list of at most 100 path patterns, each 1 to 256 characters.`);
  }
  try {
    pathMatcher(v as string[]);
  } catch (e) {
    if (e instanceof PatternSyntaxError) fail(`"${field}": ${e.message}.`);
    throw e;
  }
  return v as string[];
}

/** Reads a trigger from a JSON body: everything for POST, only the fields given for PATCH (merged over `base`). */
export function parseTriggerInput(body: unknown, base: TriggerInput | null): TriggerInput {
  if (!body || typeof body !== 'object' || Array.isArray(body)) fail('The body must be a JSON object.');
  const b = body as Record<string, unknown>;
  const unknownField = Object.keys(b).find((k) => !FIELDS.includes(k));
  if (unknownField) fail(`Unknown field "${unknownField}"; a trigger has ${FIELDS.join(', ')}.`);
  const has = (k: string) => b[k] !== undefined;
  const need = (k: string) => {
    if (!base && !has(k)) fail(`"${k}" is required.`);
  };
  ['repository', 'provider', 'cloneUrl', 'secret', 'rules'].forEach(need);
  const out: TriggerInput = base
    ? { ...base }
    : { repository: '', provider: 'github', cloneUrl: '', apiUrl: null, secret: '', rules: [], dockerfile: 'Dockerfile', context: '.', buildArgs: {}, target: null, paths: null, submodules: false, credentials: null };
  if (has('repository')) {
    const r = text(b.repository, 'repository', 256);
    const problem = repositoryNameProblem(r);
    if (problem) fail(`Invalid repository: ${problem}.`);
    out.repository = r;
  }
  if (has('provider')) {
    if (!PROVIDERS.includes(b.provider as Provider)) fail(`"provider" must be one of ${PROVIDERS.join(', ')}, got ${JSON.stringify(b.provider)}.`);
    out.provider = b.provider as Provider;
  }
  if (has('cloneUrl')) {
    const url = text(b.cloneUrl, 'cloneUrl', 2048);
    const problem = cloneUrlProblem(url);
    if (problem) fail(`Invalid cloneUrl: ${problem}.`);
    out.cloneUrl = url;
  }
  if (has('apiUrl')) {
    if (b.apiUrl === null) out.apiUrl = null;
    else {
      const url = text(b.apiUrl, 'apiUrl', 2048);
      let u: URL | null = null;
      try {
        u = new URL(url);
      } catch {
        /* reported below */
      }
      if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:')) fail(`Invalid apiUrl "${url}": give the forge API's http(s) base URL, like https://api.github.com.`);
      out.apiUrl = url.replace(/\/+$/, '');
    }
  }
  if (has('secret')) {
    const s = text(b.secret, 'secret', 1024);
    if (s.length < 8) fail('"secret" must be at least 8 characters long.');
    out.secret = s;
  }
  if (has('rules')) {
    if (!Array.isArray(b.rules) || b.rules.length === 0 || b.rules.length > 50) fail('"rules" must be a list of 1 to 50 rules { ref, tags }.');
    out.rules = (b.rules as unknown[]).map((r, i) => {
      const rule = r as Record<string, unknown>;
      if (!rule || typeof rule !== 'object') fail(`rules[${i}] must be an object { ref, tags }.`);
      const ref = text(rule.ref, `rules[${i}].ref`, 1024);
      try {
        RefPattern.compile(ref);
      } catch (e) {
        if (e instanceof RefPatternError) fail(`rules[${i}].ref: ${e.message}.`);
        throw e;
      }
      if (!Array.isArray(rule.tags) || rule.tags.length === 0 || rule.tags.length > 20 || rule.tags.some((t) => typeof t !== 'string')) {
        fail(`rules[${i}].tags must be a list of 1 to 20 tag templates.`);
      }
      for (const t of rule.tags as string[]) {
        const problem = tagTemplateProblem(t);
        if (problem) fail(`rules[${i}].tags: ${problem}.`);
      }
      return { ref, tags: rule.tags as string[] };
    });
  }
  if (has('dockerfile')) out.dockerfile = innerPath(b.dockerfile, 'dockerfile');
  if (has('context')) out.context = innerPath(b.context, 'context');
  if (has('buildArgs')) {
    const a = b.buildArgs as Record<string, unknown>;
    if (!a || typeof a !== 'object' || Array.isArray(a)) fail('"buildArgs" must be an object of NAME: value strings.');
    for (const [k, v] of Object.entries(a)) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k) || typeof v !== 'string') fail(`buildArgs: "${k}" must be a NAME with a string value.`);
    }
    out.buildArgs = a as Record<string, string>;
  }
  if (has('target')) out.target = b.target === null ? null : text(b.target, 'target', 128);
  if (has('paths')) {
    if (b.paths === null) out.paths = null;
    else {
      const p = b.paths as Record<string, unknown>;
      if (typeof p !== 'object' || Array.isArray(p) || Object.keys(p).some((k) => k !== 'include' && k !== 'exclude')) fail('"paths" must be an object { include?, exclude? }.');
      out.paths = { include: patterns(p.include, 'paths.include'), exclude: patterns(p.exclude, 'paths.exclude') };
    }
  }
  if (has('submodules')) {
    if (typeof b.submodules !== 'boolean') fail('"submodules" must be true or false.');
    out.submodules = b.submodules;
  }
  if (has('credentials')) {
    if (b.credentials === null) out.credentials = null;
    else {
      const c = b.credentials as Record<string, unknown>;
      if (typeof c !== 'object' || Array.isArray(c) || Object.keys(c).some((k) => !['token', 'username', 'deployKey'].includes(k))) {
        fail('"credentials" must be an object { token, username? } or { deployKey }.');
      }
      const creds: TriggerCredentials = {};
      if (c.token !== undefined) creds.token = text(c.token, 'credentials.token', 4096);
      if (c.username !== undefined) creds.username = text(c.username, 'credentials.username', 256);
      if (c.deployKey !== undefined) creds.deployKey = text(c.deployKey, 'credentials.deployKey', 16384);
      if (!creds.token && !creds.deployKey) fail('"credentials" needs a token or a deployKey.');
      out.credentials = creds;
    }
  }
  const ssh = !/^https?:\/\//.test(out.cloneUrl);
  if (out.credentials?.deployKey && !ssh) fail('A deployKey works with an ssh clone URL (git@host:owner/repo.git); for https give a token.');
  if (out.paths && out.provider === 'bitbucket') fail("Path filters cannot be used with Bitbucket: its push payload does not list changed files.");
  return out;
}
