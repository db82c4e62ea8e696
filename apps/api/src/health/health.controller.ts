import { Controller, Get, HttpException, Inject } from '@nestjs/common';
import { ApiOperation, ApiTags } from '@nestjs/swagger';
import { PrismaService } from '@strata/db';
import { BUILDS_QUEUE_TOKEN, type BuildsQueue } from '../queue.provider.js';
import { STORAGE, type Storage } from '../storage/storage.provider.js';
import { Public } from '../auth/route-access.js';

async function probe(fn: () => Promise<unknown>, ms = 2000): Promise<string> {
  try {
    await Promise.race([fn(), new Promise((_, reject) => setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms))]);
    return 'ok';
  } catch (e) {
    return (e as Error).message || 'failed';
  }
}

@ApiTags('health')
@Controller()
@Public('probes for load balancers and orchestrators')
export class HealthController {
  constructor(
    private readonly prisma: PrismaService,
    @Inject(BUILDS_QUEUE_TOKEN) private readonly queue: BuildsQueue,
    @Inject(STORAGE) private readonly storage: Storage,
  ) {}

  @Get('healthz')
  @ApiOperation({ summary: 'The process is alive' })
  healthz() {
    return { status: 'ok' };
  }

  @Get('readyz')
  @ApiOperation({ summary: 'PostgreSQL, Redis and S3 all answer' })
  async readyz() {
    const [postgres, redis, s3] = await Promise.all([
      probe(() => this.prisma.$queryRaw`SELECT 1`),
      probe(() => this.queue.getJobCounts("waiting")),
      probe(() => this.storage.objects.stat('readyz-probe')),
    ]);
    const checks = { postgres, redis, s3 };
    const ok = Object.values(checks).every((v) => v === 'ok');
    if (!ok) throw new HttpException({ statusCode: 503, status: 'unavailable', checks }, 503);
    return { status: 'ok', checks };
  }
}
