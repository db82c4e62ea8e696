// The console's only way to the server: same-origin calls to the public /v1 API with the pasted token.

/** The token lives here and in sessionStorage (this tab only); never in a URL, never logged. */
const TOKEN_KEY = 'strata.token';
let token: string | null = sessionStorage.getItem(TOKEN_KEY);
const listeners = new Set<(reason: string | null) => void>();

export function currentToken(): string | null {
  return token;
}

export function signIn(value: string): void {
  token = value;
  sessionStorage.setItem(TOKEN_KEY, value);
  for (const l of listeners) l(null);
}

/** Forgets the token; `reason` is shown on the sign-in page (null for a plain sign-out). */
export function signOut(reason: string | null = null): void {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  for (const l of listeners) l(reason);
}

export function onAuthChange(listener: (reason: string | null) => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** An API error as the server sent it: `{ statusCode, error, message }`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function errorOf(res: Response): Promise<ApiError> {
  let message = `${res.status} ${res.statusText}`;
  try {
    const body = (await res.json()) as { message?: string | string[] };
    if (body.message) message = Array.isArray(body.message) ? body.message.join(' ') : body.message;
  } catch {
    // Not JSON: keep the status line.
  }
  return new ApiError(res.status, message);
}

/** A raw authenticated request; a 401 signs out with the server's message. `allow` lists other statuses that carry an answer. */
export async function request(path: string, init: RequestInit = {}, allow: number[] = []): Promise<Response> {
  const headers = new Headers(init.headers);
  if (token) headers.set('authorization', `Bearer ${token}`);
  const res = await fetch(path, { ...init, headers, credentials: 'omit', referrerPolicy: 'no-referrer' });
  if (res.status === 401) {
    const err = await errorOf(res);
    signOut(`Signed out: ${err.message}`);
    throw err;
  }
  if (!res.ok && !allow.includes(res.status)) throw await errorOf(res);
  return res;
}

export async function getJson<T>(path: string, init?: RequestInit): Promise<T> {
  const res = await request(path, init);
  return (await res.json()) as T;
}

export async function postJson<T>(path: string, body?: string, contentType = 'text/plain'): Promise<T> {
  const res = await request(path, { method: 'POST', body, headers: body === undefined ? {} : { 'content-type': contentType } });
  return (await res.json()) as T;
}

export function encodeRepo(name: string): string {
  return name.split('/').map(encodeURIComponent).join('/');
}

// Shapes of the /v1 API the console reads (see README's API table).
export type BuildStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';
export interface BuildStep {
  stage: number;
  stageName: string | null;
  index: number;
  line: number | null;
  startedAt: string | null;
  instruction: string;
  cached: boolean;
  missReason: string | null;
  durationMs: number | null;
  layerDigest: string | null;
}
export interface Build {
  id: string;
  repository: string;
  status: BuildStatus;
  source: { type: 'upload' } | { type: 'git'; provider: string; cloneUrl: string; ref: string; sha: string; message: string; author: string };
  dockerfile: string;
  target: string | null;
  buildArgs: Record<string, string>;
  tags: string[];
  platform: string;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  durationMs: number | null;
  steps: BuildStep[];
  error: { message: string; line: number | null } | null;
  /** Lint findings of the Dockerfile, as `docker build` prints them. */
  warnings?: Array<{ line: number; column: number; rule: string | null; message: string }>;
  imageDigest: string | null;
  baseImage: { ref: string; digest: string; source: string } | null;
}
export interface BuildPage {
  builds: Build[];
  nextCursor: string | null;
}
export interface Repository {
  name: string;
  public: boolean;
  createdAt: string;
  tags: number;
  builds: number;
}
export interface Tag {
  name: string;
  digest: string;
  size: number | null;
  updatedAt: string;
}
export interface Whoami {
  tenant: string;
  scopes: string[];
}
export interface Diagnostic {
  line: number;
  column: number;
  message: string;
  severity: string;
  rule?: string;
}
export interface CheckResult {
  globalArgs: string[];
  stages: Array<{ name: string | null; from: string; instructions: Array<{ keyword: string; line: number }>; dependsOn: number[] }>;
  neededStages: number[];
  warnings: Diagnostic[];
  errors: Diagnostic[];
}

export interface Trigger {
  id: string;
  hookUrl: string;
  /** hookUrl on the api's public URL: what goes into the forge's webhook settings. */
  hookPublicUrl: string;
  repository: string;
  provider: string;
  cloneUrl: string;
  rules: Array<{ ref: string; tags: string[] }>;
  dockerfile: string;
  context: string;
  createdAt: string;
}
export interface StatusReport {
  state: string;
  ok: boolean;
  attempts: number;
  error?: string;
  httpStatus?: number;
  at?: string;
}
export interface Delivery {
  id: string;
  deliveryId: string;
  event: string;
  ref: string | null;
  sha: string | null;
  outcome: string;
  reason: string | null;
  buildId: string | null;
  statusReports: StatusReport[];
  createdAt: string;
}

export const TERMINAL: ReadonlySet<string> = new Set(['succeeded', 'failed', 'cancelled']);
