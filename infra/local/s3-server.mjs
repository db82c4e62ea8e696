// S3-protocol server for development and tests (s3rver; MinIO or AWS S3 in production).
import S3rver from 's3rver';
import { mkdirSync } from 'node:fs';

const [port, directory] = process.argv.slice(2);
mkdirSync(directory, { recursive: true });
const server = new S3rver({ port: Number(port), address: '127.0.0.1', directory, silent: true });
await server.run();
process.stdout.write(`s3rver listening on 127.0.0.1:${port}\n`);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close().then(() => process.exit(0)));
