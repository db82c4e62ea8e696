import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { loadConfig } from '@strata/config';

/** infra/kubernetes parses, and says what docs/operations.md promises: probes, privileges, drain, scaling. */
const dir = path.resolve('infra/kubernetes');
const docs = readdirSync(dir)
  .filter((f) => f.endsWith('.yaml'))
  .flatMap((f) =>
    parseAllDocuments(readFileSync(path.join(dir, f), 'utf8')).map((d) => {
      if (d.errors.length > 0) throw new Error(`${f}: ${d.errors[0]!.message}`);
      return { file: f, ...(d.toJS() as { apiVersion: string; kind: string; metadata: { name: string }; spec?: any; data?: Record<string, string> }) };
    }),
  );
const find = (kind: string, name: string) => {
  const doc = docs.find((d) => d.kind === kind && d.metadata.name === name);
  if (!doc) throw new Error(`no ${kind} ${name} in infra/kubernetes`);
  return doc;
};

describe('infra/kubernetes', () => {
  it('parses into named objects of known kinds', () => {
    expect(docs.length).toBeGreaterThanOrEqual(7);
    for (const d of docs) {
      expect({ file: d.file, ok: typeof d.apiVersion === 'string' && typeof d.kind === 'string' && typeof d.metadata?.name === 'string' }).toEqual({ file: d.file, ok: true });
    }
  });

  it('probes the api on /healthz (alive) and /readyz (ready)', () => {
    const api = find('Deployment', 'strata-api').spec.template.spec.containers[0];
    expect(api.livenessProbe.httpGet.path).toBe('/healthz');
    expect(api.readinessProbe.httpGet.path).toBe('/readyz');
  });

  it('gives workers privileges, a data disk, and more time to stop than their drain takes', () => {
    const config = find('ConfigMap', 'strata-config').data!;
    const pod = find('Deployment', 'strata-worker').spec.template.spec;
    expect(pod.containers[0].securityContext.privileged).toBe(true);
    expect(pod.containers[0].volumeMounts[0].mountPath).toBe(pod.containers[0].env.find((e: { name: string }) => e.name === 'STRATA_DATA_DIR').value);
    expect(pod.terminationGracePeriodSeconds * 1000).toBeGreaterThan(Number(config.STRATA_WORKER_DRAIN_MS));
  });

  it('scales workers on the queue depth /metrics reports', () => {
    const hpa = find('HorizontalPodAutoscaler', 'strata-worker').spec;
    expect(hpa.scaleTargetRef.name).toBe('strata-worker');
    expect(hpa.metrics[0].external.metric).toEqual({ name: 'strata_builds', selector: { matchLabels: { status: 'queued' } } });
  });

  it('sets only settings libs/config knows, with values it accepts', () => {
    const config = find('ConfigMap', 'strata-config').data!;
    const env: Record<string, string> = { ...config, DATABASE_URL: 'postgresql://u@db/strata', REDIS_URL: 'redis://redis:6379/0', STRATA_REGISTRY_SECRET: 'x'.repeat(32), STRATA_SECRETS_KEY: Buffer.alloc(32, 1).toString('base64') };
    for (const d of docs.filter((x) => x.kind === 'Deployment')) for (const e of d.spec.template.spec.containers[0].env ?? []) env[e.name] = e.value;
    // libs/config reads the settings; the log level is read where lines are written (libs/queue).
    const source = ['libs/config/src/index.ts', 'libs/queue/src/structured-log.ts'].map((f) => readFileSync(path.resolve(f), 'utf8')).join('\n');
    for (const name of Object.keys(env)) expect({ name, known: source.includes(`'${name}'`) || source.includes(`env.${name}`) }).toEqual({ name, known: true });
    expect(() => loadConfig(env)).not.toThrow();
  });
});
