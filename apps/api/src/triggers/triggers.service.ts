import { Inject, Injectable, NotFoundException } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { openSecrets, sealSecrets, STRATA_CONFIG, type StrataConfig, triggerSealScope } from '@strata/config';
import { type Prisma, PrismaService, type Trigger, type WebhookDelivery } from '@strata/db';
import { type DeliveryOrigin, type DeliveryOutcome, HooksService } from '../hooks/hooks.service.js';
import type { Push } from '../hooks/push-event.js';
import type { Provider } from '../hooks/signatures.js';
import type { TriggerCredentials, TriggerInput } from './trigger-input.js';
import type { PathFilter, TriggerRule } from './trigger-rules.js';

/** A trigger as the API shows it: never its secret or credentials, only whether there are credentials. */
export interface TriggerView {
  id: string;
  hookUrl: string;
  /** hookUrl on the api's public URL: what to paste into the forge's webhook settings. */
  hookPublicUrl: string;
  repository: string;
  provider: string;
  cloneUrl: string;
  apiUrl: string | null;
  rules: TriggerRule[];
  dockerfile: string;
  context: string;
  buildArgs: Record<string, string>;
  target: string | null;
  paths: PathFilter | null;
  submodules: boolean;
  credentials: { type: 'token' | 'deployKey'; username: string | null } | null;
  createdAt: string;
  updatedAt: string;
}

export interface DeliveryView {
  id: string;
  deliveryId: string;
  event: string;
  ref: string | null;
  sha: string | null;
  outcome: string;
  reason: string | null;
  buildId: string | null;
  statusReports: unknown[];
  createdAt: string;
}

function toDeliveryView(d: WebhookDelivery): DeliveryView {
  return {
    id: d.id,
    deliveryId: d.deliveryId,
    event: d.event,
    ref: d.ref,
    sha: d.sha,
    outcome: d.outcome,
    reason: d.reason,
    buildId: d.buildId,
    statusReports: d.statusReports as unknown[],
    createdAt: d.createdAt.toISOString(),
  };
}

/** What a stored trigger builds, as both its view and its PATCH input name it. */
function buildSettings(t: Trigger): Omit<TriggerInput, 'secret' | 'credentials'> {
  return {
    repository: t.repository,
    provider: t.provider as Provider,
    cloneUrl: t.cloneUrl,
    apiUrl: t.apiUrl,
    rules: t.rules as unknown as TriggerRule[],
    dockerfile: t.dockerfilePath,
    context: t.contextPath,
    buildArgs: t.buildArgs as Record<string, string>,
    target: t.target,
    paths: t.paths as PathFilter | null,
    submodules: t.submodules,
  };
}

@Injectable()
export class TriggersService {
  constructor(
    private readonly prisma: PrismaService,
    @Inject(STRATA_CONFIG) private readonly config: StrataConfig,
    private readonly hooks: HooksService,
  ) {}

  private seal(id: string, entries: Record<string, string | undefined>): Uint8Array<ArrayBuffer> {
    const map = new Map(Object.entries(entries).filter((e): e is [string, string] => e[1] !== undefined).map(([k, v]) => [k, Buffer.from(v, 'utf8')]));
    return new Uint8Array(sealSecrets(this.config.secretsKey, triggerSealScope(id), map));
  }

  private view(t: Trigger): TriggerView {
    const creds = t.credentialsSealed ? this.credentials(t) : null;
    return {
      id: t.id,
      hookUrl: `/v1/hooks/${t.id}`,
      hookPublicUrl: `${this.config.publicUrl}/v1/hooks/${t.id}`,
      ...buildSettings(t),
      credentials: creds ? { type: creds.deployKey ? 'deployKey' : 'token', username: creds.username ?? null } : null,
      createdAt: t.createdAt.toISOString(),
      updatedAt: t.updatedAt.toISOString(),
    };
  }

  private credentials(t: Trigger): TriggerCredentials | null {
    if (!t.credentialsSealed) return null;
    const m = openSecrets(this.config.secretsKey, triggerSealScope(t.id), t.credentialsSealed);
    const get = (k: string) => m.get(k)?.toString('utf8');
    return { token: get('token'), username: get('username'), deployKey: get('deployKey') };
  }

  /** The stored trigger as input, for PATCH to merge over (the secret stays sealed unless replaced). */
  private asInput(t: Trigger): TriggerInput {
    return {
      ...buildSettings(t),
      secret: '',
      credentials: this.credentials(t),
    };
  }

  private data(id: string, input: TriggerInput) {
    return {
      repository: input.repository,
      provider: input.provider,
      cloneUrl: input.cloneUrl,
      apiUrl: input.apiUrl,
      rules: input.rules as unknown as Prisma.InputJsonValue,
      dockerfilePath: input.dockerfile,
      contextPath: input.context,
      buildArgs: input.buildArgs,
      target: input.target,
      paths: input.paths ? (input.paths as Prisma.InputJsonValue) : (null as unknown as Prisma.InputJsonValue),
      submodules: input.submodules,
      credentialsSealed: input.credentials ? this.seal(id, { ...input.credentials }) : null,
    };
  }

  async create(tenantId: string, input: TriggerInput): Promise<TriggerView> {
    const id = randomUUID();
    const t = await this.prisma.trigger.create({ data: { id, tenantId, secretSealed: this.seal(id, { secret: input.secret }), ...this.data(id, input) } });
    return this.view(t);
  }

  async find(tenantId: string, id: string): Promise<Trigger> {
    const t = /^[0-9a-f-]{36}$/i.test(id) ? await this.prisma.trigger.findFirst({ where: { id, tenantId } }) : null;
    if (!t) throw new NotFoundException(`Trigger "${id}" does not exist.`);
    return t;
  }

  async get(tenantId: string, id: string): Promise<TriggerView> {
    return this.view(await this.find(tenantId, id));
  }

  /** The stored trigger as input, for PATCH. */
  async input(tenantId: string, id: string): Promise<TriggerInput> {
    return this.asInput(await this.find(tenantId, id));
  }

  async list(tenantId: string): Promise<{ triggers: TriggerView[] }> {
    const rows = await this.prisma.trigger.findMany({ where: { tenantId }, orderBy: [{ createdAt: 'desc' }, { id: 'desc' }] });
    return { triggers: rows.map((t) => this.view(t)) };
  }

  async update(tenantId: string, id: string, input: TriggerInput): Promise<TriggerView> {
    await this.find(tenantId, id);
    const t = await this.prisma.trigger.update({
      where: { id },
      data: { ...this.data(id, input), ...(input.secret ? { secretSealed: this.seal(id, { secret: input.secret }) } : {}) },
    });
    return this.view(t);
  }

  async remove(tenantId: string, id: string): Promise<void> {
    await this.find(tenantId, id);
    await this.prisma.trigger.delete({ where: { id } });
  }

  async deliveries(tenantId: string, id: string, limit: number): Promise<{ deliveries: DeliveryView[] }> {
    await this.find(tenantId, id);
    const rows = await this.prisma.webhookDelivery.findMany({ where: { triggerId: id, tenantId }, orderBy: [{ createdAt: 'desc' }, { id: 'desc' }], take: limit });
    return { deliveries: rows.map(toDeliveryView) };
  }

  /**
   * Runs a recorded push through the trigger again (its rules as they are now) as a new delivery:
   * what a user asks for when a build failed for a reason outside the commit.
   */
  async redeliver(tenantId: string, id: string, deliveryRowId: string, origin: DeliveryOrigin): Promise<DeliveryOutcome> {
    const trigger = await this.find(tenantId, id);
    const d = /^[0-9a-f-]{36}$/i.test(deliveryRowId) ? await this.prisma.webhookDelivery.findFirst({ where: { id: deliveryRowId, triggerId: id, tenantId } }) : null;
    if (!d) throw new NotFoundException(`Delivery "${deliveryRowId}" of trigger "${id}" does not exist.`);
    if (!d.push) throw new NotFoundException(`Delivery "${deliveryRowId}" was a ${d.event} event, not a push; there is nothing to build again.`);
    return this.hooks.recordPush(trigger, `redelivery:${randomUUID()}:${d.deliveryId}`.slice(0, 200), d.event, d.push as unknown as Push, origin);
  }
}
