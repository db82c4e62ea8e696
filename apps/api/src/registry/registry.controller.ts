import { All, Controller, Inject, Req, Res, UseFilters } from '@nestjs/common';
import { STRATA_CONFIG, type StrataConfig } from '@strata/config';
import { isDigest } from '@strata/oci';
import {
  bearerChallenge,
  checkDigest,
  MAX_MANIFEST_BYTES,
  parseRegistryPath,
  type RegistryAction,
  type RegistryCaller,
  RegistryAccess,
  RegistryAuthError,
  RegistryError,
  Registry,
  type RegistryRoute,
} from '@strata/registry';
import type { Request, Response } from 'express';
import { RegistryErrorFilter } from './registry-error.filter.js';
import { readSmallBody } from '../common/body.js';
import { Public } from '../auth/route-access.js';
import { AuditLog } from '../audit/audit-log.js';
import { QuotasService } from '../tenancy/quotas.service.js';

/**
 * The OCI Distribution API at /v2. Names contain slashes, so one catch-all route parses the path
 * itself; the work happens in Registry (libs/registry) and authorisation in RegistryAccess.
 */
@Controller()
@UseFilters(RegistryErrorFilter)
@Public('the /v2 token flow: RegistryAccess authenticates and grants per repository and action')
export class RegistryController {
  constructor(
    private readonly registry: Registry,
    private readonly access: RegistryAccess,
    private readonly audit: AuditLog,
    private readonly quotas: QuotasService,
    @Inject(STRATA_CONFIG) private readonly config: StrataConfig,
  ) {}

  @All(['v2', 'v2/*path'])
  async handle(@Req() req: Request, @Res() res: Response): Promise<void> {
    res.setHeader('Docker-Distribution-API-Version', 'registry/2.0');
    const url = new URL(req.originalUrl, 'http://registry');
    const route = parseRegistryPath(url.pathname.replace(/^\/v2/, ''));
    if (route === null) throw new RegistryError('NAME_UNKNOWN', `${url.pathname} is not a registry path`, undefined, 404);
    const caller = await this.access.identify(req.headers.authorization);
    await this.dispatch(route, caller, req, res, url.searchParams);
  }

  /** Audit entry for a change through /v2 (only tenants' callers can change anything there). */
  private async recordChange(caller: RegistryCaller, req: Request, action: string, target: string, data?: { digest: string }): Promise<void> {
    if (caller.kind === 'anonymous' || caller.tenantId === null) return;
    await this.audit.record({ tenantId: caller.tenantId, actor: `token:${caller.tokenId}`, action, target, sourceIp: req.ip, data });
  }

  private unsupported(req: Request): never {
    throw new RegistryError('UNSUPPORTED', `${req.method} is not supported here`);
  }

  private async need(caller: RegistryCaller, name: string, action: RegistryAction): Promise<void> {
    await this.access.authorize(caller, name, action);
  }

  private async dispatch(route: RegistryRoute, caller: RegistryCaller, req: Request, res: Response, query: URLSearchParams): Promise<void> {
    const method = req.method;
    switch (route.kind) {
      case 'base': {
        if (caller.kind === 'anonymous') throw new RegistryAuthError('authentication required', bearerChallenge(this.config.publicUrl));
        res.status(200).json({});
        return;
      }
      case 'token': {
        if (method !== 'GET') this.unsupported(req);
        res.status(200).json(await this.access.issueToken(caller, query.getAll('scope')));
        return;
      }
      case 'catalog': {
        if (method !== 'GET') this.unsupported(req);
        const tenant = this.access.catalogTenant(caller);
        const page = pageOf(query);
        const result = await this.registry.catalog(tenant, page);
        const last = result.repositories.at(-1);
        if (result.more && last) res.setHeader('Link', `</v2/_catalog?n=${page.n}&last=${encodeURIComponent(last)}>; rel="next"`);
        res.status(200).json({ repositories: result.repositories });
        return;
      }
      case 'tags': {
        if (method !== 'GET') this.unsupported(req);
        await this.need(caller, route.name, 'pull');
        const page = pageOf(query);
        const result = await this.registry.listTags(route.name, page);
        const last = result.tags.at(-1);
        if (result.more && last) res.setHeader('Link', `</v2/${route.name}/tags/list?n=${page.n}&last=${encodeURIComponent(last)}>; rel="next"`);
        res.status(200).json({ name: result.name, tags: result.tags });
        return;
      }
      case 'referrers': {
        if (method !== 'GET') this.unsupported(req);
        await this.need(caller, route.name, 'pull');
        const artifactType = query.get('artifactType') ?? undefined;
        const index = await this.registry.referrers(route.name, route.digest, artifactType);
        if (artifactType) res.setHeader('OCI-Filters-Applied', 'artifactType');
        res.status(200).type(index.mediaType).send(JSON.stringify(index));
        return;
      }
      case 'manifest':
        return this.manifest(route, caller, req, res);
      case 'blob':
        return this.blob(route, caller, req, res);
      case 'uploads':
        return this.startUpload(route, caller, req, res, query);
      case 'upload':
        return this.upload(route, caller, req, res, query);
    }
  }

  private async manifest(route: Extract<RegistryRoute, { kind: 'manifest' }>, caller: RegistryCaller, req: Request, res: Response): Promise<void> {
    const { name, reference } = route;
    if (req.method === 'GET' || req.method === 'HEAD') {
      await this.need(caller, name, 'pull');
      const accept = (req.headers.accept ?? '').split(',').map((a) => a.split(';')[0].trim()).filter(Boolean);
      const m = await this.registry.getManifest(name, reference, { withBody: req.method === 'GET', accept });
      // By digest it never changes; a tag can be moved, so caches must ask again (and get a 304 if it was not).
      describeContent(res, m.digest, isDigest(reference));
      if (clientHolds(req, m.digest)) {
        res.status(304).end();
        return;
      }
      res.status(200).setHeader('Content-Type', m.mediaType);
      res.setHeader('Content-Length', m.size);
      res.end(req.method === 'GET' ? m.bytes : undefined);
      return;
    }
    if (req.method === 'PUT') {
      await this.need(caller, name, 'push');
      const bytes = await readSmallBody(req, MAX_MANIFEST_BYTES, 'manifest', () => new RegistryError('SIZE_INVALID', `the manifest is larger than ${MAX_MANIFEST_BYTES} bytes`, undefined, 413));
      const stored = await this.registry.putManifest(name, reference, bytes, req.headers['content-type']);
      res.setHeader('Location', `/v2/${name}/manifests/${stored.digest}`);
      res.setHeader('Docker-Content-Digest', stored.digest);
      if (stored.subject) res.setHeader('OCI-Subject', stored.subject);
      await this.recordChange(caller, req, isDigest(reference) ? 'manifest.push' : 'tag.push', `${name}:${reference}`, { digest: stored.digest });
      res.status(201).end();
      return;
    }
    if (req.method === 'DELETE') {
      await this.need(caller, name, 'push');
      await this.registry.deleteManifest(name, reference);
      await this.recordChange(caller, req, isDigest(reference) ? 'manifest.delete' : 'tag.delete', `${name}:${reference}`);
      res.status(202).end();
      return;
    }
    this.unsupported(req);
  }

  private async blob(route: Extract<RegistryRoute, { kind: 'blob' }>, caller: RegistryCaller, req: Request, res: Response): Promise<void> {
    const { name, digest } = route;
    if (req.method === 'GET' || req.method === 'HEAD') {
      await this.need(caller, name, 'pull');
      const held = clientHolds(req, digest);
      if (req.method === 'HEAD' || held) {
        // Asked of this repository: a 304 must not tell anyone a digest exists elsewhere.
        const { size } = await this.registry.statBlob(name, digest);
        describeContent(res, digest, true);
        if (held) {
          res.status(304).end();
          return;
        }
        res.status(200).setHeader('Content-Length', size);
        res.setHeader('Content-Type', 'application/octet-stream');
        res.setHeader('Accept-Ranges', 'bytes');
        res.end();
        return;
      }
      const range = await this.requestedRange(req, name, digest);
      const blob = await this.registry.readBlob(name, digest, range ?? undefined);
      describeContent(res, digest, true);
      res.setHeader('Content-Type', 'application/octet-stream');
      res.setHeader('Accept-Ranges', 'bytes');
      res.setHeader('Content-Length', blob.end - blob.start);
      if (range) res.status(206).setHeader('Content-Range', `bytes ${blob.start}-${blob.end - 1}/${blob.size}`);
      else res.status(200);
      // A failure once bytes went out can only cut the response short: the client sees a short body.
      await blob.sendTo(res).then(
        () => res.end(),
        () => res.destroy(),
      );
      return;
    }
    if (req.method === 'DELETE') {
      await this.need(caller, name, 'push');
      await this.registry.deleteBlob(name, digest);
      res.status(202).end();
      return;
    }
    this.unsupported(req);
  }

  /** `Range: bytes=a-b`, `bytes=a-` or `bytes=-n` (the last n bytes). */
  private async requestedRange(req: Request, name: string, digest: Parameters<Registry['statBlob']>[1]): Promise<{ start: number; end?: number } | null> {
    const header = req.headers.range;
    if (!header) return null;
    const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
    if (!m || (m[1] === '' && m[2] === '')) throw new RegistryError('RANGE_INVALID', `unsupported Range "${header}": use bytes=<start>-<end>`);
    if (m[1] === '') {
      const { size } = await this.registry.statBlob(name, digest);
      return { start: Math.max(0, size - Number(m[2])) };
    }
    return { start: Number(m[1]), ...(m[2] === '' ? {} : { end: Number(m[2]) + 1 }) };
  }

  private async startUpload(route: Extract<RegistryRoute, { kind: 'uploads' }>, caller: RegistryCaller, req: Request, res: Response, query: URLSearchParams): Promise<void> {
    if (req.method !== 'POST') this.unsupported(req);
    const { name } = route;
    await this.need(caller, name, 'push');
    const tenantId = caller.kind !== 'anonymous' ? caller.tenantId : null;
    const assertCanStore = async (): Promise<void> => {
      if (tenantId === null) return;
      await this.quotas.assertCanStore(tenantId).catch((e: Error) => {
        throw new RegistryError('DENIED', e.message, { name }, 403);
      });
    };
    const mount = query.get('mount');
    const from = query.get('from');
    const digest = query.get('digest');
    if (mount === null && digest === null) {
      // The common case, a session for chunks, is one statement; the quota is checked (and the session
      // dropped if refused) only when the tenant has a stored-bytes quota.
      req.resume();
      const { uuid, storeLimited } = await this.registry.startUpload(name);
      if (storeLimited) {
        try {
          await assertCanStore();
        } catch (err) {
          await this.registry.cancelUpload(name, uuid).catch(() => undefined);
          throw err;
        }
      }
      this.uploadAccepted(res, name, uuid, 0);
      return;
    }
    await assertCanStore();
    if (mount !== null && from !== null && isDigest(mount)) {
      const mayPull = (await this.access.grant(caller, from, ['pull'])).length > 0;
      if (mayPull && (await this.registry.mount(name, from, mount))) {
        req.resume();
        return this.blobCreated(res, name, mount);
      }
    }
    if (digest !== null) {
      const checked = checkDigest(digest);
      await this.registry.pushBlob(name, checked, req);
      return this.blobCreated(res, name, checked);
    }
    req.resume();
    const { uuid } = await this.registry.startUpload(name);
    this.uploadAccepted(res, name, uuid, 0);
  }

  private async upload(route: Extract<RegistryRoute, { kind: 'upload' }>, caller: RegistryCaller, req: Request, res: Response, query: URLSearchParams): Promise<void> {
    const { name, uuid } = route;
    await this.need(caller, name, 'push');
    switch (req.method) {
      case 'GET': {
        const { size } = await this.registry.uploadStatus(name, uuid);
        this.uploadAccepted(res, name, uuid, size, 204);
        return;
      }
      case 'PATCH': {
        const range = parseContentRange(req.headers['content-range']);
        const { size } = await this.registry.appendChunk(name, uuid, req, range ?? undefined, bodyLength(req));
        this.uploadAccepted(res, name, uuid, size);
        return;
      }
      case 'PUT': {
        const digest = query.get('digest');
        if (digest === null) throw new RegistryError('DIGEST_INVALID', 'finishing an upload needs ?digest=');
        const checked = checkDigest(digest);
        const hasBody = Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
        if (!hasBody) req.resume();
        await this.registry.finishUpload(name, uuid, checked, hasBody ? req : undefined, hasBody ? bodyLength(req) : undefined);
        return this.blobCreated(res, name, checked);
      }
      case 'DELETE': {
        req.resume();
        await this.registry.cancelUpload(name, uuid);
        res.status(204).end();
        return;
      }
      default:
        this.unsupported(req);
    }
  }

  private blobCreated(res: Response, name: string, digest: string): void {
    res.setHeader('Location', `/v2/${name}/blobs/${digest}`);
    res.setHeader('Docker-Content-Digest', digest);
    res.status(201).end();
  }

  private uploadAccepted(res: Response, name: string, uuid: string, size: number, status = 202): void {
    res.setHeader('Location', `/v2/${name}/blobs/uploads/${uuid}`);
    res.setHeader('Docker-Upload-UUID', uuid);
    res.setHeader('Range', `0-${Math.max(size - 1, 0)}`);
    res.setHeader('Content-Length', 0);
    res.status(status).end();
  }
}

function pageOf(query: URLSearchParams): { n: number; last?: string } {
  const raw = query.get('n');
  let n = 1000;
  if (raw !== null) {
    if (!/^\d+$/.test(raw)) throw new RegistryError('UNSUPPORTED', `n must be a non-negative integer, got "${raw}"`, undefined, 400);
    n = Math.min(Number(raw), 10_000);
  }
  const last = query.get('last');
  return { n, ...(last ? { last } : {}) };
}

/** `Content-Range: <start>-<end>` (inclusive), also in the `bytes a-b/total` form some clients send. */
function parseContentRange(header: string | undefined): { start: number; end: number } | null {
  if (!header) return null;
  const m = /^(?:bytes[ =])?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(header.trim());
  if (!m || Number(m[2]) < Number(m[1])) throw new RegistryError('RANGE_INVALID', `malformed Content-Range "${header}": use <start>-<end>`);
  return { start: Number(m[1]), end: Number(m[2]) };
}

/** The body's length when Content-Length gives it (Node's parser then delivers exactly that many bytes, or fails the request). */
function bodyLength(req: Request): number | undefined {
  if (req.headers['transfer-encoding'] !== undefined) return undefined;
  const raw = req.headers['content-length'];
  return raw !== undefined && /^\d+$/.test(raw) ? Number(raw) : undefined;
}

/**
 * The headers of an answer about content named by its digest: Docker-Content-Digest, and the digest as
 * the ETag. `immutable` (a blob, or a manifest asked for by digest): the bytes behind the name never
 * change, so any cache may keep them for a year, as docker-registry lets them.
 */
function describeContent(res: Response, digest: string, immutable: boolean): void {
  res.setHeader('Docker-Content-Digest', digest);
  res.setHeader('ETag', `"${digest}"`);
  if (immutable) res.setHeader('Cache-Control', 'max-age=31536000');
}

/** The request's If-None-Match names this digest (quoted or not, weak or strong) or is `*`: the client holds these bytes. */
function clientHolds(req: Request, digest: string): boolean {
  const header = req.headers['if-none-match'];
  if (!header) return false;
  return header.split(',').some((tag) => {
    const value = tag.trim().replace(/^W\//, '');
    return value === '*' || value === `"${digest}"` || value === digest;
  });
}
