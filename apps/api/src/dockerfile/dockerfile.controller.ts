import { BadRequestException, Controller, HttpCode, Inject, Post, Query, Req, Res } from '@nestjs/common';
import { ApiBearerAuth, ApiHeader, ApiOperation, ApiQuery, ApiTags } from '@nestjs/swagger';
import type { Request, Response } from 'express';
import { IgnoreMatcher, parseDockerignore, PatternSyntaxError } from '@strata/build-engine';
import { STRATA_CONFIG, type StrataConfig } from '@strata/config';
import { checkDockerfile, type Diagnostic, DockerfileError, lintCopyIgnoredFile, parseDockerfile } from '@strata/dockerfile';
import { RequireScope } from '../auth/route-access.js';
import { readSmallBody } from '../common/body.js';
import { parseBuildArgs, queryList, querySingle } from '../common/query.js';

/** `Strata-Dockerignore: <base64 of the .dockerignore text>`: a header holds no newlines, so the text travels encoded. */
const DOCKERIGNORE_HEADER = 'strata-dockerignore';
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** The .dockerignore sent with a check, or null; a malformed one is the caller's 400. */
function dockerignoreOf(req: Request): string | null {
  const raw = req.headers[DOCKERIGNORE_HEADER];
  if (raw === undefined) return null;
  const value = (Array.isArray(raw) ? raw.join(',') : raw).trim();
  if (!BASE64.test(value) || value.length % 4 === 1) throw new BadRequestException('Strata-Dockerignore must be the .dockerignore text encoded in base64.');
  return Buffer.from(value, 'base64').toString('utf8');
}

const byPosition = (a: Diagnostic, b: Diagnostic): number => a.line - b.line || a.column - b.column;

@ApiTags('dockerfile')
@ApiBearerAuth()
@Controller('v1/dockerfile')
export class DockerfileController {
  constructor(@Inject(STRATA_CONFIG) private readonly config: StrataConfig) {}

  @Post('check')
  @HttpCode(200)
  @RequireScope('builds:read')
  @ApiOperation({ summary: 'Check a Dockerfile without building it (like `docker build --check`); body: the Dockerfile text' })
  @ApiQuery({ name: 'buildArg', required: false, isArray: true, description: 'NAME=VALUE' })
  @ApiQuery({ name: 'target', required: false })
  @ApiHeader({
    name: 'Strata-Dockerignore',
    required: false,
    description: "The build context's .dockerignore, base64-encoded: COPY and ADD sources it excludes are reported (CopyIgnoredFile).",
  })
  async check(@Query() q: Record<string, unknown>, @Req() req: Request, @Res() res: Response) {
    const dockerignore = dockerignoreOf(req);
    const text = (await readSmallBody(req, 4 * 1024 * 1024, 'Dockerfile')).toString('utf8');
    const buildArgs = parseBuildArgs(queryList(q.buildArg));
    // The same options a worker of this deployment builds with, so a check and a build never disagree.
    const result = checkDockerfile(text, { buildArgs, target: querySingle(q.target, 'target') || undefined, allowHostNetwork: this.config.run.network === 'host', allowInsecure: this.config.run.allowInsecure });
    if (dockerignore !== null) {
      let patterns;
      try {
        patterns = parseDockerignore(dockerignore);
      } catch (e) {
        if (e instanceof PatternSyntaxError) throw new BadRequestException(`Strata-Dockerignore: ${e.message}.`);
        throw e;
      }
      const matcher = new IgnoreMatcher(patterns);
      let found: Diagnostic[] = [];
      try {
        found = lintCopyIgnoredFile(parseDockerfile(text), { hasExceptions: patterns.some((p) => p.exclusion), matches: (p) => matcher.ignores(p) }, { buildArgs });
      } catch (e) {
        // A Dockerfile that does not parse already has its errors in the result.
        if (!(e instanceof DockerfileError)) throw e;
      }
      result.warnings = [...result.warnings, ...found.filter((d) => d.severity === 'warning')].sort(byPosition);
      result.errors = [...result.errors, ...found.filter((d) => d.severity === 'error')].sort(byPosition);
    }
    res.status(result.errors.length > 0 ? 422 : 200).json(result);
  }
}
