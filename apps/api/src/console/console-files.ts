import { createReadStream, existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NextFunction, Request, Response } from 'express';

/** Where Vite writes the console (apps/console/dist), the same from apps/api/src and apps/api/dist. */
export const CONSOLE_DIST = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../console/dist');

/** Paths the api itself answers; everything else under GET is the console's. */
const API_PREFIXES = ['/v1', '/v2', '/docs', '/healthz', '/readyz', '/metrics'];

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
};

/**
 * The console's headers: scripts only from this origin (Vite emits no inline script), no framing,
 * no Referer leaking build ids to other sites.
 */
export const CONSOLE_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

function isApiPath(p: string): boolean {
  return API_PREFIXES.some((prefix) => p === prefix || p.startsWith(`${prefix}/`) || p.startsWith(`${prefix}-`));
}

/**
 * Serves the built console at `/`: a file of the build when one matches, else index.html so the
 * client-side router handles the path (the SPA fallback). API paths pass through untouched.
 */
export function consoleFiles(dist = CONSOLE_DIST) {
  const index = path.join(dist, 'index.html');
  return async (req: Request, res: Response, next: NextFunction): Promise<void> => {
    if ((req.method !== 'GET' && req.method !== 'HEAD') || isApiPath(req.path) || !existsSync(index)) return next();
    let file = index;
    let rel: string;
    try {
      rel = decodeURIComponent(req.path);
    } catch {
      rel = '/';
    }
    const candidate = path.join(dist, path.normalize(rel));
    if (candidate.startsWith(`${dist}${path.sep}`) && rel !== '/') {
      const s = await stat(candidate).catch(() => null);
      if (s?.isFile()) file = candidate;
      // A missing asset is a 404, not the page: a stale tab must not parse HTML as JavaScript.
      else if (rel.startsWith('/assets/')) return next();
    }
    const s = await stat(file);
    res.setHeader('Content-Type', TYPES[path.extname(file)] ?? 'application/octet-stream');
    res.setHeader('Content-Length', String(s.size));
    res.setHeader('Content-Security-Policy', CONSOLE_CSP);
    res.setHeader('Referrer-Policy', 'no-referrer');
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('X-Frame-Options', 'DENY');
    // Assets carry a content hash in their names; the page must be re-read to find new ones.
    res.setHeader('Cache-Control', file === index ? 'no-cache' : 'public, max-age=31536000, immutable');
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    createReadStream(file).pipe(res);
  };
}
