import { loadConfig } from '@strata/config';
import { createApiApp } from './app.js';

const config = loadConfig();
const app = await createApiApp(config);
await app.listen(config.port, config.host);
// Written whatever STRATA_LOG_LEVEL says (deployments and tests wait for it), as JSON like every other line.
const msg = `Strata api listening on ${config.publicUrl} (OpenAPI at ${config.publicUrl}/docs)`;
process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), level: 'info', msg, url: config.publicUrl })}\n`);
