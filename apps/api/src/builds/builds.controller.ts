import { BadRequestException, Controller, Get, HttpCode, Param, Post, Query, Req } from '@nestjs/common';
import { ApiBearerAuth, ApiHeader, ApiOperation, ApiQuery, ApiResponse, ApiTags } from '@nestjs/swagger';
import type { Request } from 'express';
import { RequireScope } from '../auth/route-access.js';
import { AuditLog } from '../audit/audit-log.js';
import { allowedRepository, type AuthedRequest, type Caller, CurrentCaller } from '../auth/tenant.js';
import { parseBuildArgs, queryBool, queryList, querySingle, validRepositoryName, validTag } from '../common/query.js';
import { MAX_SECRET_BYTES, parseSecretHeaders, parseSshHeaders, SECRET_HEADER, SSH_HEADER } from './build-secrets.js';
import { parseRegistryAuthHeader, REGISTRY_AUTH_HEADER, RegistryCredentialsError } from '@strata/registry';
import { BuildsService } from './builds.service.js';
import { QuotasService } from '../tenancy/quotas.service.js';

const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];

function validDockerfilePath(p: string | undefined): string {
  const path = p ?? 'Dockerfile';
  if (path === '' || path.startsWith('/') || path.split('/').includes('..') || path.includes('\0')) {
    throw new BadRequestException(`Invalid dockerfile "${path}": give a path inside the build context, like "Dockerfile" or "docker/app.Dockerfile".`);
  }
  return path.replace(/^\.\//, '');
}

@ApiTags('builds')
@ApiBearerAuth()
@Controller('v1/builds')
export class BuildsController {
  constructor(
    private readonly builds: BuildsService,
    private readonly audit: AuditLog,
    private readonly quotas: QuotasService,
  ) {}

  @Post()
  @HttpCode(202)
  @RequireScope('builds:write')
  @ApiOperation({
    summary:
      'Start a build; the body is the build context as a tar or tar.gz archive, or as a context manifest ' +
      '(Content-Type application/vnd.strata.context-manifest+json, optionally Content-Encoding: gzip) whose contents are all in the tenant\'s content store (POST /v1/contexts/manifest, POST /v1/contexts/blobs)',
  })
  @ApiQuery({ name: 'repository', required: true })
  @ApiQuery({ name: 'tag', required: false, isArray: true })
  @ApiQuery({ name: 'dockerfile', required: false })
  @ApiQuery({ name: 'target', required: false })
  @ApiQuery({ name: 'buildArg', required: false, isArray: true, description: 'NAME=VALUE' })
  @ApiQuery({ name: 'noCache', required: false, type: Boolean })
  @ApiQuery({ name: 'noCacheFilter', required: false, isArray: true, description: 'stage names whose steps skip the cache' })
  @ApiHeader({
    name: 'Strata-Build-Secret',
    required: false,
    description:
      `A secret for RUN --mount=type=secret, as "id=<id>,src=<base64 value>"; repeat the header for more secrets. ` +
      `The id is letters, digits, ".", "_" or "-"; a value is at most ${MAX_SECRET_BYTES} bytes (and within the server's HTTP header size limit). ` +
      'Stored only encrypted (AES-256-GCM) until the build ends, then erased; never returned, logged (redacted as ***), cached or put in the image.',
  })
  @ApiHeader({
    name: 'Strata-Build-SSH',
    required: false,
    description:
      'A private key (PEM or OpenSSH, without a passphrase) for RUN --mount=type=ssh, as "id=<id>,src=<base64 key>" (what `strata build --ssh` sends); ' +
      'repeat the header for more keys, with the same id to put several keys in one agent. The worker loads them into an ssh-agent whose socket the step sees. ' +
      'Stored only encrypted (AES-256-GCM) with the secrets until the build ends, then erased; never returned, logged, cached or put in the image.',
  })
  @ApiHeader({
    name: 'Strata-Context-Digest',
    required: false,
    description:
      'sha256:<hex> of a context manifest (its canonical JSON) that this tenant built from before: the build uses that manifest again and the body is ignored (an unchanged rebuild sends no context at all). ' +
      '409 with unknownManifest: true when there is none: send the manifest.',
  })
  @ApiHeader({
    name: 'Strata-Registry-Auth',
    required: false,
    description:
      'Credentials for registries FROM pulls from: base64 of JSON {"<host[:port]>": {"username": "...", "password": "..."}}. ' +
      'Stored only encrypted (AES-256-GCM) until the build ends, then erased; never returned or logged.',
  })
  async create(@CurrentCaller() caller: Caller, @Query() q: Record<string, unknown>, @Req() req: Request) {
    const authHeader = req.headers[REGISTRY_AUTH_HEADER];
    let registryAuth;
    try {
      registryAuth = typeof authHeader === 'string' && authHeader.trim() !== '' ? parseRegistryAuthHeader(authHeader) : undefined;
    } catch (e) {
      if (e instanceof RegistryCredentialsError) throw new BadRequestException(e.message);
      throw e;
    }
    // SSH keys are sealed with the secrets (as `ssh:<id>:<n>` entries) and leave with them when the build ends.
    const secrets = new Map([...parseSecretHeaders(req.headersDistinct[SECRET_HEADER]), ...parseSshHeaders(req.headersDistinct[SSH_HEADER])]);
    const tags = queryList(q.tag).map(validTag);
    const target = querySingle(q.target, 'target');
    const request = {
      repository: allowedRepository(caller, validRepositoryName(querySingle(q.repository, 'repository'))),
      tags: tags.length > 0 ? [...new Set(tags)] : ['latest'],
      dockerfile: validDockerfilePath(querySingle(q.dockerfile, 'dockerfile')),
      target: target || undefined,
      buildArgs: parseBuildArgs(queryList(q.buildArg)),
      noCache: queryBool(q.noCache, 'noCache'),
      noCacheFilter: queryList(q.noCacheFilter).map((n) => n.toLowerCase()),
      contentType: req.headers['content-type'],
      contentEncoding: req.headers['content-encoding'],
      contextDigest: typeof req.headers['strata-context-digest'] === 'string' ? req.headers['strata-context-digest'].trim() : undefined,
      registryAuth,
    };
    try {
      await this.quotas.assertCanStartBuild(caller.tenantId);
    } catch (e) {
      req.resume();
      throw e;
    }
    const submitted = await this.builds.submit(caller.tenantId, request, req, secrets);
    await this.audit.byCaller(req as AuthedRequest, 'build.start', submitted.id, { repository: request.repository, tags: request.tags });
    return submitted;
  }

  @Get()
  @RequireScope('builds:read')
  @ApiOperation({ summary: 'List builds, newest first' })
  @ApiQuery({ name: 'repository', required: false })
  @ApiQuery({ name: 'status', required: false, enum: STATUSES })
  @ApiQuery({ name: 'limit', required: false, type: Number })
  @ApiQuery({ name: 'cursor', required: false })
  @ApiQuery({ name: 'sha', required: false, description: 'builds of this commit (a full sha, or a prefix of at least 7 hex digits)' })
  async list(@CurrentCaller() caller: Caller, @Query() q: Record<string, unknown>) {
    const repository = querySingle(q.repository, 'repository');
    const status = querySingle(q.status, 'status');
    if (status && !STATUSES.includes(status)) throw new BadRequestException(`Invalid status "${status}": use one of ${STATUSES.join(', ')}.`);
    const limitRaw = querySingle(q.limit, 'limit') ?? '20';
    if (!/^\d+$/.test(limitRaw) || Number(limitRaw) < 1 || Number(limitRaw) > 100) {
      throw new BadRequestException(`Invalid limit "${limitRaw}": use a number from 1 to 100.`);
    }
    const sha = querySingle(q.sha, 'sha')?.toLowerCase();
    if (sha !== undefined && !/^[0-9a-f]{7,64}$/.test(sha)) throw new BadRequestException(`Invalid sha "${sha}": give a commit id of 7 to 64 hex digits.`);
    return this.builds.list(caller.tenantId, { repository, status, sha, limit: Number(limitRaw), cursor: querySingle(q.cursor, 'cursor') }, caller.repositories);
  }

  @Post(':id/cancel')
  @HttpCode(202)
  @RequireScope('builds:write')
  @ApiOperation({ summary: 'Cancel a build: a queued one never runs; a running one has its container killed and ends as cancelled, moving no tag' })
  @ApiResponse({ status: 202, description: 'The build, cancelled (queued) or being cancelled (running)' })
  @ApiResponse({ status: 404, description: 'No such build for this tenant' })
  @ApiResponse({ status: 409, description: 'The build has already finished' })
  async cancel(@CurrentCaller() caller: Caller, @Param('id') id: string, @Req() req: AuthedRequest) {
    const cancelled = await this.builds.cancel(caller.tenantId, id, caller.repositories);
    await this.audit.byCaller(req, 'build.cancel', id);
    return cancelled;
  }

  @Post(':id/rebuild')
  @HttpCode(202)
  @RequireScope('builds:write')
  @ApiOperation({
    summary: 'Build the same context (or, for a build from a push, the same commit) again with the same Dockerfile, target, build args and tags (secrets and registry credentials are not kept, so not carried over)',
  })
  @ApiResponse({ status: 202, description: 'The new build, queued' })
  @ApiResponse({ status: 404, description: 'No such build for this tenant' })
  @ApiResponse({ status: 409, description: 'The build context is no longer stored' })
  async rebuild(@CurrentCaller() caller: Caller, @Param('id') id: string, @Req() req: AuthedRequest) {
    // A rebuild starts a build like POST /v1/builds: quota-checked and audited.
    await this.quotas.assertCanStartBuild(caller.tenantId);
    const rebuilt = await this.builds.rebuild(caller.tenantId, id, caller.repositories);
    await this.audit.byCaller(req, 'build.start', rebuilt.id, { repository: rebuilt.repository, tags: rebuilt.tags, rebuildOf: id });
    return rebuilt;
  }

  @Get(':id/dockerfile')
  @RequireScope('builds:read')
  @ApiOperation({ summary: "The build's Dockerfile text, read from its stored context: { path, text }" })
  @ApiResponse({ status: 404, description: 'No such build for this tenant, or its context has no such file' })
  async dockerfile(@CurrentCaller() caller: Caller, @Param('id') id: string) {
    return this.builds.dockerfile(caller.tenantId, id, caller.repositories);
  }

  @Get(':id')
  @RequireScope('builds:read')
  @ApiOperation({ summary: 'A build with its steps, error and resulting image' })
  async get(@CurrentCaller() caller: Caller, @Param('id') id: string) {
    return this.builds.get(caller.tenantId, id, caller.repositories);
  }
}
