import { jest } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import { loadConfig } from '@strata/config';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { type Stack, startStack } from '../support/stack.js';

jest.setTimeout(180_000);

const KiB = 1024;

/**
 * The OCI Distribution spec's chunked upload (PATCH with Content-Range, in order; GET on the upload
 * reports `Range: 0-<last byte stored>`) with S3 failing under it: a chunk S3 refuses is answered
 * with an error and not counted, the upload's status says what is safely stored, and the client
 * resumes from there to a blob with the right digest.
 */
describe('registry blob uploads resume after an S3 fault', () => {
  let proxy: FaultProxy;
  let stack: Stack;
  let tenant: { token: string; name: string };
  beforeAll(async () => {
    proxy = await startFaultProxy(loadConfig().s3.endpoint!);
    stack = await startStack({ worker: false, env: { S3_ENDPOINT: proxy.url } });
    tenant = await stack.tenant('resume');
  });
  afterAll(async () => {
    await stack?.close();
    await proxy?.close();
  });

  const reg = async (method: string, p: string, body?: Buffer, headers: Record<string, string> = {}) => {
    const res = await fetch(`${stack.url}${p}`, {
      method,
      body,
      headers: { authorization: `Basic ${Buffer.from(`x:${tenant.token}`).toString('base64')}`, ...headers },
      redirect: 'manual',
    });
    const text = await res.text();
    let json: any = null;
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
    return { status: res.status, headers: res.headers, json };
  };
  const patch = (location: string, data: Buffer, from: number) =>
    reg('PATCH', location, data, { 'content-range': `${from}-${from + data.length - 1}`, 'content-type': 'application/octet-stream' });

  it('answers 503 for a chunk S3 refused or reset, reports the Range stored, and completes from there with the right digest', async () => {
    const name = `${tenant.name}/resumed`;
    const blob = randomBytes(1536 * KiB);
    const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
    const [a, b, c] = [blob.subarray(0, 512 * KiB), blob.subarray(512 * KiB, 1024 * KiB), blob.subarray(1024 * KiB)];

    const started = await reg('POST', `/v2/${name}/blobs/uploads/`);
    expect(started.status).toBe(202);
    const location = started.headers.get('location')!;
    expect((await patch(location, a, 0)).headers.get('range')).toBe(`0-${a.length - 1}`);

    // S3 refuses every write of the next chunk, past the SDK's retries.
    proxy.setRules([{ kind: '503', method: 'PUT', path: /\/uploads\// }]);
    const refused = await patch(location, b, a.length);
    proxy.setRules([]);
    expect(refused.status).toBe(503);
    expect(refused.json.errors[0].code).toBe('UNAVAILABLE');
    expect(refused.json.errors[0].message).toMatch(/^storage \(S3\) is failing/);
    expect(refused.headers.get('retry-after')).toBe('5');
    const afterRefusal = await reg('GET', location);
    expect({ status: afterRefusal.status, range: afterRefusal.headers.get('range') }).toEqual({ status: 204, range: `0-${a.length - 1}` });

    // A chunk sent from anywhere but the stored end is refused (416), as the spec says.
    expect((await patch(location, c, a.length + b.length)).status).toBe(416);
    expect((await patch(location, b, a.length)).headers.get('range')).toBe(`0-${a.length + b.length - 1}`);

    // S3 resets the connection on every write of the last chunk.
    proxy.setRules([{ kind: 'reset', method: 'PUT', path: /\/uploads\// }]);
    const reset = await patch(location, c, a.length + b.length);
    proxy.setRules([]);
    expect(reset.status).toBe(503);
    expect((await reg('GET', location)).headers.get('range')).toBe(`0-${a.length + b.length - 1}`);
    expect((await patch(location, c, a.length + b.length)).headers.get('range')).toBe(`0-${blob.length - 1}`);

    // S3 fails the commit (the join and the move under the digest): the upload is put back as it was.
    proxy.setRules([{ kind: '503', method: 'PUT' }]);
    const commitRefused = await reg('PUT', `${location}?digest=${digest}`);
    proxy.setRules([]);
    expect(commitRefused.status).toBe(503);
    expect((await reg('HEAD', `/v2/${name}/blobs/${digest}`)).status).toBe(404);
    expect((await reg('GET', location)).headers.get('range')).toBe(`0-${blob.length - 1}`);

    const done = await reg('PUT', `${location}?digest=${digest}`);
    expect(done.status).toBe(201);
    expect(done.headers.get('docker-content-digest')).toBe(digest);
    const pulled = await fetch(`${stack.url}/v2/${name}/blobs/${digest}`, { headers: { authorization: `Basic ${Buffer.from(`x:${tenant.token}`).toString('base64')}` } });
    expect(pulled.status).toBe(200);
    expect(createHash('sha256').update(Buffer.from(await pulled.arrayBuffer())).digest('hex')).toBe(digest.slice(7));
    expect(proxy.injected['503']).toBeGreaterThan(0);
    expect(proxy.injected.reset).toBeGreaterThan(0);
  });

  it('never commits a blob whose content does not match its digest, with or without faults', async () => {
    const name = `${tenant.name}/mismatch`;
    const sent = randomBytes(300 * KiB);
    const claimed = `sha256:${createHash('sha256').update(randomBytes(16)).digest('hex')}`;
    const started = await reg('POST', `/v2/${name}/blobs/uploads/`);
    const location = started.headers.get('location')!;
    proxy.setRules([{ kind: '503', method: 'PUT', path: /\/uploads\//, times: 1 }]);
    expect((await patch(location, sent, 0)).status).toBe(202);
    proxy.setRules([]);
    const put = await reg('PUT', `${location}?digest=${claimed}`);
    expect(put.status).toBe(400);
    expect(put.json.errors[0].code).toBe('DIGEST_INVALID');
    expect((await reg('HEAD', `/v2/${name}/blobs/${claimed}`)).status).toBe(404);
  });
});
