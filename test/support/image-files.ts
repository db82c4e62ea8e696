import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { readTarEntries } from '@strata/oci';
import type { Stack } from './stack.js';

export interface ImageFile {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  linkname?: string;
  content?: Buffer;
}

/** The image's files as its layers stack up (from the oci-archive a user downloads): path → header fields and content. */
export async function imageFiles(stack: Stack, token: string, repository: string, tag = 'latest'): Promise<Map<string, ImageFile>> {
  const res = await fetch(`${stack.url}/v1/repositories/${repository}/tags/${tag}/oci-archive`, { headers: { authorization: `Bearer ${token}` } });
  if (res.status !== 200) throw new Error(`the oci-archive of ${repository}:${tag} answered ${res.status}`);
  const dir = mkdtempSync(path.join(tmpdir(), 'strata-image-files-'));
  writeFileSync(path.join(dir, 'image.tar'), Buffer.from(await res.arrayBuffer()));
  execFileSync('tar', ['-xf', 'image.tar'], { cwd: dir });
  const blob = (d: string) => readFileSync(path.join(dir, 'blobs', ...d.split(':')));
  const index = JSON.parse(readFileSync(path.join(dir, 'index.json'), 'utf8'));
  const manifest = JSON.parse(blob(index.manifests[0].digest).toString('utf8'));
  const files = new Map<string, ImageFile>();
  for (const l of manifest.layers as Array<{ digest: string }>) {
    for await (const { header, body } of readTarEntries(Readable.from([blob(l.digest)]))) {
      const chunks: Buffer[] = [];
      for await (const c of body) chunks.push(c as Buffer);
      files.set(header.name.replace(/^\.?\//, '').replace(/\/$/, ''), {
        type: header.type, mode: header.mode & 0o7777, uid: header.uid, gid: header.gid, mtime: header.mtime,
        ...(header.type === 'symlink' ? { linkname: header.linkname } : {}),
        ...(header.type === 'file' ? { content: Buffer.concat(chunks) } : {}),
      });
    }
  }
  return files;
}
