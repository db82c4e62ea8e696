import { Controller, HttpCode, Post, Req } from '@nestjs/common';
import { ApiBearerAuth, ApiBody, ApiConsumes, ApiHeader, ApiOperation, ApiResponse, ApiTags } from '@nestjs/swagger';
import type { Request } from 'express';
import { CONTEXT_MANIFEST_MEDIA_TYPE } from '@strata/oci';
import { RequireScope } from '../auth/route-access.js';
import { type Caller, CurrentCaller } from '../auth/tenant.js';
import { QuotasService } from '../tenancy/quotas.service.js';
import { ContextStoreService } from './context-store.service.js';

const MANIFEST_SCHEMA = {
  type: 'object',
  required: ['version', 'entries'],
  properties: {
    version: { type: 'integer', enum: [1] },
    entries: {
      type: 'array',
      description: 'Every path of the context (after .dockerignore), relative to its root ("." is the root itself). Hard-linked files are listed as files with the same digest.',
      items: {
        type: 'object',
        required: ['path', 'type'],
        properties: {
          path: { type: 'string', example: 'src/main.ts' },
          type: { type: 'string', enum: ['file', 'dir', 'symlink'] },
          mode: { type: 'integer', description: 'permission bits (0 to 0o7777); file default 0o644, dir 0o755' },
          mtime: { type: 'integer', description: 'seconds since the epoch' },
          size: { type: 'integer', description: 'file: its length in bytes' },
          digest: { type: 'string', description: 'file: sha256:<64 lowercase hex digits> of its content' },
          target: { type: 'string', description: 'symlink: its relative target, inside the context' },
        },
      },
    },
  },
};

@ApiTags('contexts')
@ApiBearerAuth()
@Controller('v1/contexts')
export class ContextsController {
  constructor(
    private readonly store: ContextStoreService,
    private readonly quotas: QuotasService,
  ) {}

  @Post('manifest')
  @HttpCode(200)
  @RequireScope('builds:write')
  @ApiOperation({
    summary:
      "Which contents of a context manifest the tenant's content store lacks (upload those with POST /v1/contexts/blobs, then POST /v1/builds with the manifest). " +
      'Only this tenant\'s store is asked: a content another tenant holds is still missing here.',
  })
  @ApiConsumes('application/json', CONTEXT_MANIFEST_MEDIA_TYPE)
  @ApiHeader({ name: 'Content-Encoding', required: false, description: 'gzip, for a large manifest' })
  @ApiBody({ schema: MANIFEST_SCHEMA })
  @ApiResponse({ status: 200, description: '{ missing: ["sha256:…"], files, bytes, contents }' })
  @ApiResponse({ status: 400, description: 'The manifest is not valid (the message names the entry and what is wrong)' })
  async manifest(@CurrentCaller() caller: Caller, @Req() req: Request) {
    const manifest = await this.store.readManifest(req, req.headers['content-encoding']);
    const missing = await this.store.missing(caller.tenantId, manifest.contents.keys());
    return { missing, files: manifest.files, bytes: manifest.bytes, contents: manifest.contents.size, digest: manifest.digest };
  }

  @Post('blobs')
  @HttpCode(201)
  @RequireScope('builds:write')
  @ApiOperation({
    summary:
      "Adds contents to the tenant's content store: the body is a tar (or tar.gz) of regular files each named by the sha256 of its content (64 hex digits). " +
      'Each is verified as it streams; a mismatch refuses the whole batch. Counted against the stored-bytes quota.',
  })
  @ApiConsumes('application/x-tar', 'application/gzip')
  @ApiHeader({ name: 'Strata-Pack-Bytes', required: false, description: "the sum of the sizes of the batch's distinct contents: the api stores the batch in one S3 PutObject (refused with 400 when the contents add up to another size)" })
  @ApiBody({ schema: { type: 'string', format: 'binary' } })
  @ApiResponse({ status: 201, description: '{ stored, bytes, skipped }: contents newly stored, their bytes, and those already there' })
  @ApiResponse({ status: 400, description: 'An entry is not named by the sha256 of its content, or the body is not a tar' })
  @ApiResponse({ status: 403, description: 'The stored-bytes quota is reached' })
  async blobs(@CurrentCaller() caller: Caller, @Req() req: Request) {
    try {
      await this.quotas.assertCanStore(caller.tenantId);
    } catch (e) {
      req.resume();
      throw e;
    }
    const packBytes = req.headers['strata-pack-bytes'];
    return this.store.storeBatch(caller.tenantId, req, req.headers['content-type'], typeof packBytes === 'string' ? packBytes : undefined);
  }
}
