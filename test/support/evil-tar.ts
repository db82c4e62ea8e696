import { execFileSync } from 'node:child_process';

/** Crafts a tar with one hostile entry (python's tarfile writes what GNU tar would refuse to). */
export function evilTar(kind: 'parent-path' | 'absolute-path' | 'symlink-out' | 'device'): Buffer {
  const script = `
import io, sys, tarfile
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode='w') as t:
    df = b'FROM scratch\\nCOPY . /\\n'
    i = tarfile.TarInfo('Dockerfile'); i.size = len(df); t.addfile(i, io.BytesIO(df))
    kind = sys.argv[1]
    if kind == 'parent-path':
        i = tarfile.TarInfo('../escape.txt'); i.size = 3; t.addfile(i, io.BytesIO(b'bad'))
    elif kind == 'absolute-path':
        i = tarfile.TarInfo('/tmp/strata-escape.txt'); i.size = 3; t.addfile(i, io.BytesIO(b'bad'))
    elif kind == 'symlink-out':
        i = tarfile.TarInfo('link'); i.type = tarfile.SYMTYPE; i.linkname = '../../../../etc'; t.addfile(i)
        i = tarfile.TarInfo('link/owned'); i.size = 3; t.addfile(i, io.BytesIO(b'bad'))
    elif kind == 'device':
        i = tarfile.TarInfo('dev-null'); i.type = tarfile.CHRTYPE; i.devmajor = 1; i.devminor = 3; t.addfile(i)
sys.stdout.buffer.write(buf.getvalue())
`;
  return execFileSync('python3', ['-c', script, kind]);
}
