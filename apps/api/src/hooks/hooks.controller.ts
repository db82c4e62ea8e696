import { Controller, HttpCode, Param, Post, Req } from '@nestjs/common';
import { ApiOperation, ApiResponse, ApiTags } from '@nestjs/swagger';
import type { Request } from 'express';
import { Public } from '../auth/route-access.js';
import { readSmallBody } from '../common/body.js';
import { HooksService } from './hooks.service.js';

/** GitHub's cap on a webhook payload; GitLab, Gitea and Bitbucket send less. */
export const MAX_HOOK_BODY_BYTES = 25 * 1024 * 1024;

@ApiTags('triggers')
@Controller('v1/hooks')
@Public("the forge's signature over the body, checked with the trigger's secret")
export class HooksController {
  constructor(private readonly hooks: HooksService) {}

  // No bearer token: the provider's signature over the raw body is the authentication.
  @Post(':id')
  @HttpCode(200)
  @ApiOperation({ summary: "A forge's webhook for a trigger: signed with the trigger's secret (X-Hub-Signature-256, X-Gitea-Signature, X-Hub-Signature, X-Gitlab-Token or webhook-signature)" })
  @ApiResponse({ status: 200, description: 'Recorded: a build started, a skip with its reason, a ping, or a duplicate delivery' })
  @ApiResponse({ status: 401, description: 'Unsigned or badly signed; nothing is stored' })
  async receive(@Param('id') id: string, @Req() req: Request) {
    const body = await readSmallBody(req, MAX_HOOK_BODY_BYTES, 'webhook payload');
    return this.hooks.receive(id, req.headers, body, req.ip ?? null);
  }
}
