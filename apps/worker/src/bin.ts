import { startWorker } from './main.js';

const worker = await startWorker();
process.stdout.write('Strata worker consuming the builds queue\n');
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    void worker.close().then(() => process.exit(0));
  });
}
