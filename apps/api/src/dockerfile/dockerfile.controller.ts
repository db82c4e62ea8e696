import { Controller, HttpCode, Post, Query, Req, Res, UseGuards } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiQuery, ApiTags } from '@nestjs/swagger';
import type { Request, Response } from 'express';
import { checkDockerfile } from '@strata/dockerfile';
import { AuthGuard, RequireScope } from '../auth/auth.guard.js';
import { readSmallBody } from '../common/body.js';
import { parseBuildArgs, queryList, querySingle } from '../common/query.js';

@ApiTags('dockerfile')
@ApiBearerAuth()
@Controller('v1/dockerfile')
@UseGuards(AuthGuard)
export class DockerfileController {
  @Post('check')
  @HttpCode(200)
  @RequireScope('builds:read')
  @ApiOperation({ summary: 'Check a Dockerfile without building it (like `docker build --check`); body: the Dockerfile text' })
  @ApiQuery({ name: 'buildArg', required: false, isArray: true, description: 'NAME=VALUE' })
  @ApiQuery({ name: 'target', required: false })
  async check(@Query() q: Record<string, unknown>, @Req() req: Request, @Res() res: Response) {
    const text = (await readSmallBody(req, 4 * 1024 * 1024, 'Dockerfile')).toString('utf8');
    const result = checkDockerfile(text, { buildArgs: parseBuildArgs(queryList(q.buildArg)), target: querySingle(q.target, 'target') || undefined });
    res.status(result.errors.length > 0 ? 422 : 200).json(result);
  }
}
