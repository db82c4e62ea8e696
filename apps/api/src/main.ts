import { setFlagsFromString } from 'node:v8';
import { loadConfig } from '@strata/config';
import { createApiApp } from './app.js';

// The old generation may grow by half of what survived a full GC before the next one (V8 picks
// 10% for a mostly idle server): a 100 MiB blob pushed then costs no full GC of the api's heap
// instead of two or three (docs/adr/0043). Read by V8 at each GC, so setting it here takes effect.
setFlagsFromString('--heap-growing-percent=50');

const config = loadConfig();
const app = await createApiApp(config);
await app.listen(config.port, config.host);
// Written whatever STRATA_LOG_LEVEL says (deployments and tests wait for it), as JSON like every other line.
const msg = `Strata api listening on ${config.publicUrl} (OpenAPI at ${config.publicUrl}/docs)`;
process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), level: 'info', msg, url: config.publicUrl })}\n`);
