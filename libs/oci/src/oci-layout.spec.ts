import { execFileSync } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { encodeJsonBlob } from './canonical-json.js';
import type { Digest } from './digest.js';
import { LayerWriter } from './layer-writer.js';
import { MediaType } from './media-types.js';
import { writeOciLayoutTar } from './oci-layout.js';
import type { ImageConfig, ImageManifest } from './types.js';

interface TestImage {
  blobs: Map<Digest, Buffer>;
  manifest: ReturnType<typeof encodeJsonBlob>;
}

async function buildImage(): Promise<TestImage> {
  const blobs = new Map<Digest, Buffer>();
  const chunks: Buffer[] = [];
  const packed = new LayerWriter().pack([
    { type: 'directory', path: 'etc', mode: 0o755 },
    { type: 'file', path: 'etc/greeting', mode: 0o644, content: Buffer.from('hello from strata\n') },
    { type: 'directory', path: 'bin', mode: 0o755 },
    { type: 'file', path: 'bin/app', mode: 0o755, content: Buffer.from('#!/bin/sh\necho hi\n') },
  ]);
  for await (const chunk of packed.stream) chunks.push(chunk as Buffer);
  const layer = await packed.result;
  blobs.set(layer.digest, Buffer.concat(chunks));

  const config: ImageConfig = {
    architecture: 'amd64',
    os: 'linux',
    created: '2024-01-01T00:00:00Z',
    config: { Env: ['PATH=/bin'], Cmd: ['/bin/app'], WorkingDir: '/', Labels: { team: 'strata' } },
    rootfs: { type: 'layers', diff_ids: [layer.diffId] },
    history: [{ created: '2024-01-01T00:00:00Z', created_by: 'COPY . /' }],
  };
  const configBlob = encodeJsonBlob(MediaType.ociConfig, config);
  blobs.set(configBlob.descriptor.digest, configBlob.bytes);
  const manifestValue: ImageManifest = { schemaVersion: 2, mediaType: MediaType.ociManifest, config: configBlob.descriptor, layers: [layer.descriptor] };
  const manifest = encodeJsonBlob(MediaType.ociManifest, manifestValue);
  blobs.set(manifest.descriptor.digest, manifest.bytes);
  return { blobs, manifest };
}

const openFrom = (blobs: Map<Digest, Buffer>) => async (digest: Digest) => {
  const blob = blobs.get(digest);
  if (!blob) throw new Error(`no blob ${digest}`);
  return Readable.from([blob]);
};

let workDir: string;
beforeAll(() => {
  workDir = mkdtempSync(join(tmpdir(), 'strata-layout-'));
});
afterAll(() => {
  rmSync(workDir, { recursive: true, force: true });
});

async function writeArchive(image: TestImage, file: string): Promise<void> {
  await writeOciLayoutTar({ images: [{ descriptor: image.manifest.descriptor, refName: 'v1' }], openBlob: openFrom(image.blobs) }, createWriteStream(file));
}

describe('writeOciLayoutTar', () => {
  it('writes an oci-archive that skopeo inspects with the expected digest, layers and config', async () => {
    const image = await buildImage();
    const file = join(workDir, 'image.tar');
    await writeArchive(image, file);
    const listing = execFileSync('/bin/tar', ['-tf', file], { encoding: 'utf8' }).trim().split('\n');
    expect(listing.slice(0, 4)).toEqual(['oci-layout', 'index.json', 'blobs/', 'blobs/sha256/']);
    expect(listing).toHaveLength(4 + 3);

    const inspected = JSON.parse(execFileSync('/usr/bin/skopeo', ['inspect', `oci-archive:${file}:v1`], { encoding: 'utf8' })) as {
      Digest: string;
      Layers: string[];
      Architecture: string;
      Env: string[];
      Labels: Record<string, string>;
    };
    expect(inspected.Digest).toBe(image.manifest.descriptor.digest);
    expect(inspected.Layers).toHaveLength(1);
    expect(inspected.Architecture).toBe('amd64');
    expect(inspected.Env).toEqual(['PATH=/bin']);
    expect(inspected.Labels).toEqual({ team: 'strata' });
  });

  it('writes a layout that umoci unpacks into a runtime bundle with the layer files', async () => {
    const image = await buildImage();
    const file = join(workDir, 'umoci.tar');
    await writeArchive(image, file);
    const layout = join(workDir, 'layout');
    mkdirSync(layout);
    execFileSync('/bin/tar', ['-xf', file, '-C', layout]);
    const bundle = join(workDir, 'bundle');
    execFileSync('/usr/bin/umoci', ['unpack', '--rootless', '--image', `${layout}:v1`, bundle], { stdio: 'pipe' });
    expect(readFileSync(join(bundle, 'rootfs/etc/greeting'), 'utf8')).toBe('hello from strata\n');
    expect(statSync(join(bundle, 'rootfs/bin/app')).mode & 0o777).toBe(0o755);
    const runtimeConfig = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8')) as { process: { args: string[] } };
    expect(runtimeConfig.process.args).toEqual(['/bin/app']);
  });

  it('writes byte-identical archives for the same image', async () => {
    const image = await buildImage();
    const a = join(workDir, 'a.tar');
    const b = join(workDir, 'b.tar');
    await writeArchive(image, a);
    await writeArchive(image, b);
    expect(readFileSync(a).equals(readFileSync(b))).toBe(true);
  });

  it('fails when a blob does not match its descriptor', async () => {
    const image = await buildImage();
    const layerDigest = [...image.blobs.keys()][0]!;
    const tampered = new Map(image.blobs);
    tampered.set(layerDigest, Buffer.concat([image.blobs.get(layerDigest)!.subarray(1), Buffer.from('!')]));
    const sink = new Writable({ write: (_c, _e, cb) => cb() });
    await expect(writeOciLayoutTar({ images: [{ descriptor: image.manifest.descriptor }], openBlob: openFrom(tampered) }, sink)).rejects.toThrow(
      new RegExp(`blob ${layerDigest}: content hashes to sha256:`),
    );
  });
});
