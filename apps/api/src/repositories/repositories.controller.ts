import { BadRequestException, Controller, Delete, Get, HttpCode, Param, Post, Query, Req, Res } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiQuery, ApiResponse, ApiTags } from '@nestjs/swagger';
import type { Request, Response } from 'express';
import { RequireScope } from '../auth/route-access.js';
import { AuditLog } from '../audit/audit-log.js';
import { allowedRepository, type AuthedRequest, type Caller, CurrentCaller } from '../auth/tenant.js';
import { repositoryAllowed } from '@strata/db';
import { querySingle, validRepositoryName, validTag } from '../common/query.js';
import { RepositoriesService } from './repositories.service.js';
import { QuotasService } from '../tenancy/quotas.service.js';

@ApiTags('repositories')
@ApiBearerAuth()
@Controller('v1/repositories')
export class RepositoriesController {
  constructor(
    private readonly repositories: RepositoriesService,
    private readonly audit: AuditLog,
    private readonly quotas: QuotasService,
  ) {}

  @Get()
  @RequireScope('registry:pull')
  @ApiOperation({ summary: "The tenant's repositories" })
  async list(@CurrentCaller() caller: Caller) {
    const { repositories } = await this.repositories.list(caller.tenantId);
    return { repositories: repositories.filter((r) => repositoryAllowed(caller.repositories, r.name)) };
  }

  // Repository names may contain slashes, so the routes match the whole rest of the path.
  @Get('*path/tags/:tag/oci-archive')
  @RequireScope('registry:pull')
  @ApiOperation({ summary: 'The tagged image as an OCI image-layout tar (what `docker save` gives, in OCI form)' })
  async ociArchive(@CurrentCaller() caller: Caller, @Param('path') path: string[] | string, @Param('tag') tag: string, @Res() res: Response) {
    const name = allowedRepository(caller, validRepositoryName(joinPath(path), 'repository name'));
    await this.repositories.streamOciArchive(caller.tenantId, name, validTag(tag), res);
  }

  @Delete('*path/tags/:tag')
  @HttpCode(204)
  @RequireScope('registry:push')
  @ApiOperation({ summary: 'Delete a tag (the image stays until garbage collection finds nothing referring to it)' })
  @ApiResponse({ status: 204, description: 'The tag is gone' })
  @ApiResponse({ status: 404, description: 'No such repository or tag for this tenant' })
  async deleteTag(@CurrentCaller() caller: Caller, @Param('path') path: string[] | string, @Param('tag') tag: string, @Req() req: Request): Promise<void> {
    const name = allowedRepository(caller, validRepositoryName(joinPath(path), 'repository name'));
    await this.repositories.deleteTag(caller.tenantId, name, validTag(tag));
    await this.audit.byCaller(req as AuthedRequest, 'tag.delete', `${name}:${tag}`, { via: 'api' });
  }

  @Get('*path/tags')
  @RequireScope('registry:pull')
  @ApiOperation({ summary: "A repository's tags with their digest, size (manifest, config and compressed layers) and last update" })
  tags(@CurrentCaller() caller: Caller, @Param('path') path: string[] | string) {
    return this.repositories.tags(caller.tenantId, allowedRepository(caller, validRepositoryName(joinPath(path), 'repository name')));
  }

  @Post('*path/import')
  @HttpCode(201)
  @RequireScope('registry:push')
  @ApiOperation({ summary: 'Create a one-layer image from a root filesystem tar, as `docker import` does' })
  @ApiQuery({ name: 'tag', required: false })
  async import(@CurrentCaller() caller: Caller, @Param('path') path: string[] | string, @Query() q: Record<string, unknown>, @Req() req: Request) {
    const name = allowedRepository(caller, validRepositoryName(joinPath(path), 'repository name'));
    const tag = validTag(querySingle(q.tag, 'tag') ?? 'latest');
    const type = (req.headers['content-type'] ?? '').split(';')[0].trim();
    if (!['application/x-tar', 'application/tar', 'application/gzip', 'application/x-gzip', 'application/octet-stream'].includes(type)) {
      req.resume();
      throw new BadRequestException(`The root filesystem must be sent as application/x-tar or application/gzip, not "${type || 'nothing'}".`);
    }
    try {
      await this.quotas.assertCanStore(caller.tenantId);
    } catch (e) {
      req.resume();
      throw e;
    }
    const imported = await this.repositories.importRootfs(caller.tenantId, name, tag, req);
    await this.audit.byCaller(req as AuthedRequest, 'tag.push', `${name}:${tag}`, { via: 'import' });
    return imported;
  }
}

function joinPath(p: string[] | string): string {
  return Array.isArray(p) ? p.join('/') : p;
}
