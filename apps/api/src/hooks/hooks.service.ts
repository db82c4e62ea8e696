import { BadRequestException, Inject, Injectable, NotFoundException, UnauthorizedException } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { openSecrets, STRATA_CONFIG, type StrataConfig, triggerSealScope } from '@strata/config';
import { isUniqueViolation, type Prisma, PrismaService, retryOnUniqueViolation, type Trigger } from '@strata/db';
import type { BuildScheduler } from '@strata/queue';
import { BUILD_SCHEDULER_TOKEN } from '../queue.provider.js';
import { QuotasService } from '../tenancy/quotas.service.js';
import { decidePush, type PathFilter, type TriggerRule } from '../triggers/trigger-rules.js';
import { type HookEvent, PayloadError, type Push, readHookEvent } from './push-event.js';
import { type Provider, verifyHookSignature } from './signatures.js';

/** What the hook answers, and what the delivery list shows. */
export interface DeliveryOutcome {
  deliveryId: string;
  outcome: 'build' | 'skipped' | 'ping' | 'duplicate';
  reason: string | null;
  buildId: string | null;
}

/** The git source a build records (GET /v1/builds/{id} shows all but the last three). */
export interface GitSource {
  type: 'git';
  provider: Provider;
  cloneUrl: string;
  ref: string;
  sha: string;
  message: string;
  author: string;
  deliveryId: string;
  triggerId: string;
  forgeRepository: string;
  context: string;
  submodules: boolean;
}

/** Who made a delivery start a build, as the audit log names them. */
export interface DeliveryOrigin {
  /** `trigger:<id>` for a forge's webhook; the caller's actor for a redelivery. */
  actor: string;
  sourceIp: string | null;
}

@Injectable()
export class HooksService {
  constructor(
    private readonly prisma: PrismaService,
    @Inject(STRATA_CONFIG) private readonly config: StrataConfig,
    @Inject(BUILD_SCHEDULER_TOKEN) private readonly scheduler: BuildScheduler,
    private readonly quotas: QuotasService,
  ) {}

  /**
   * One webhook request. The signature is checked on the raw body before anything in it is read;
   * an unsigned or badly signed request stores nothing.
   */
  async receive(triggerId: string, headers: IncomingHttpHeaders, body: Buffer, sourceIp: string | null = null): Promise<DeliveryOutcome> {
    const trigger = /^[0-9a-f-]{36}$/i.test(triggerId) ? await this.prisma.trigger.findUnique({ where: { id: triggerId } }) : null;
    if (!trigger) throw new NotFoundException(`Trigger "${triggerId}" does not exist.`);
    const secret = openSecrets(this.config.secretsKey, triggerSealScope(trigger.id), trigger.secretSealed).get('secret') ?? Buffer.alloc(0);
    const verdict = verifyHookSignature(trigger.provider as Provider, headers, body, secret);
    secret.fill(0);
    if (!verdict.ok) throw new UnauthorizedException(`The webhook request is not signed with this trigger's secret: ${verdict.why}.`);
    let event: HookEvent;
    try {
      event = readHookEvent(trigger.provider as Provider, headers, body, parsePayload(headers, body));
    } catch (e) {
      if (e instanceof PayloadError) throw new BadRequestException(`The webhook payload cannot be read: ${e.message}.`);
      throw e;
    }
    if (event.kind === 'ping') return this.record(trigger, event.deliveryId, event.event, null, { outcome: 'ping', reason: 'ping: the trigger is reachable and the signature is valid' });
    if (event.kind === 'other' || !event.push) {
      return this.record(trigger, event.deliveryId, event.event, null, { outcome: 'skipped', reason: `the "${event.event}" event does not build; only pushes do` });
    }
    return this.recordPush(trigger, event.deliveryId, event.event, event.push, { actor: `trigger:${trigger.id}`, sourceIp });
  }

  /** Decides what a push leads to and records it, with its build, exactly once per delivery id. */
  async recordPush(trigger: Trigger, deliveryId: string, event: string, push: Push, origin: DeliveryOrigin): Promise<DeliveryOutcome> {
    const decision = decidePush(trigger.rules as unknown as TriggerRule[], trigger.paths as PathFilter | null, push);
    if (decision.outcome === 'skipped') return this.record(trigger, deliveryId, event, push, decision);
    // Over a quota the forge is answered 429 or 403 as an API build is, and nothing is recorded, so
    // the forge's own redelivery builds once there is room.
    await this.quotas.assertCanStartBuild(trigger.tenantId);
    return this.record(trigger, deliveryId, event, push, { outcome: 'build', reason: null, tags: decision.tags }, origin);
  }

  /**
   * Stores the delivery, and its build when there is one, in one transaction. The unique
   * (triggerId, deliveryId) index in Postgres makes a second copy of the delivery, on any api
   * replica, at any moment, fail as a whole: it answers as a duplicate and queues nothing.
   */
  private async record(
    trigger: Trigger,
    deliveryId: string,
    event: string,
    push: Push | null,
    result: { outcome: 'build' | 'skipped' | 'ping'; reason: string | null; tags?: string[] },
    origin?: DeliveryOrigin,
  ): Promise<DeliveryOutcome> {
    const buildId = result.outcome === 'build' ? randomUUID() : null;
    // The writes, made on the client given: one transaction either way (see below).
    const writesOn = (db: Prisma.TransactionClient): Prisma.PrismaPromise<unknown>[] => [
      db.webhookDelivery.create({
        data: {
          tenantId: trigger.tenantId,
          triggerId: trigger.id,
          deliveryId,
          event,
          ref: push?.ref ?? null,
          sha: push?.sha ?? null,
          outcome: result.outcome,
          reason: result.reason,
          buildId,
          push: push ? (push as unknown as Prisma.InputJsonValue) : undefined,
        },
      }),
    ];
    let buildWrites: (db: Prisma.TransactionClient) => Prisma.PrismaPromise<unknown>[] = () => [];
    if (buildId && push?.sha) {
      const repository = await retryOnUniqueViolation(() =>
        this.prisma.repository.upsert({
          where: { tenantId_name: { tenantId: trigger.tenantId, name: trigger.repository } },
          update: {},
          create: { tenantId: trigger.tenantId, name: trigger.repository },
        }),
      );
      const source: GitSource = {
        type: 'git',
        provider: trigger.provider as Provider,
        cloneUrl: trigger.cloneUrl,
        ref: push.ref,
        sha: push.sha,
        message: push.message,
        author: push.author,
        deliveryId,
        triggerId: trigger.id,
        forgeRepository: push.forgeRepository,
        context: trigger.contextPath,
        submodules: trigger.submodules,
      };
      buildWrites = (db) => [
        db.build.create({
          data: {
            id: buildId,
            tenantId: trigger.tenantId,
            repositoryId: repository.id,
            source: 'git',
            dockerfilePath: trigger.dockerfilePath,
            target: trigger.target,
            buildArgs: trigger.buildArgs as Prisma.InputJsonValue,
            tags: result.tags ?? ['latest'],
            gitSource: source as unknown as Prisma.InputJsonValue,
            commitSha: push.sha,
            // The reconciler of this queue re-enqueues it if its job is lost (docs/adr/0011).
            queue: this.config.queuePrefix,
          },
        }),
        // Audited with the build, in the same transaction: a duplicate delivery records neither.
        db.auditEvent.create({
          data: {
            tenantId: trigger.tenantId,
            actor: origin?.actor ?? `trigger:${trigger.id}`,
            action: 'build.start',
            target: buildId,
            sourceIp: origin?.sourceIp ?? null,
            data: { repository: trigger.repository, tags: result.tags ?? ['latest'], triggerId: trigger.id, deliveryId, sha: push.sha },
          },
        }),
      ];
    }
    const all = (db: Prisma.TransactionClient) => [...writesOn(db), ...buildWrites(db)];
    try {
      if (buildId) {
        // A build holds a queued slot: with a queued-builds quota, the writes run inside the
        // transaction that checked it under the tenant's row lock (QuotasService.withQueuedSlot).
        await this.quotas.withQueuedSlot(trigger.tenantId, async (tx) => {
          if (!tx) return this.prisma.$transaction(all(this.prisma));
          for (const write of all(tx)) await write;
          return undefined;
        });
      } else {
        await this.prisma.$transaction(all(this.prisma));
      }
    } catch (e) {
      if (!isUniqueViolation(e)) throw e;
      const first = await this.prisma.webhookDelivery.findUnique({ where: { triggerId_deliveryId: { triggerId: trigger.id, deliveryId } } });
      return { deliveryId, outcome: 'duplicate', reason: `delivery ${deliveryId} was received before (${first?.outcome ?? 'recorded'}); nothing new starts`, buildId: first?.buildId ?? null };
    }
    if (buildId) await this.scheduler.enqueue({ buildId, tenantId: trigger.tenantId });
    return { deliveryId, outcome: result.outcome, reason: result.reason, buildId };
  }
}

/** JSON, or GitHub's form encoding (`payload=<json>`). */
function parsePayload(headers: IncomingHttpHeaders, body: Buffer): unknown {
  const type = (headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  const text = type === 'application/x-www-form-urlencoded' ? (new URLSearchParams(body.toString('utf8')).get('payload') ?? '') : body.toString('utf8');
  try {
    return JSON.parse(text);
  } catch {
    throw new PayloadError('the body is not JSON');
  }
}
