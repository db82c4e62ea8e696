import { loadConfig } from '@strata/config';
import { createApiApp } from './app.js';

const config = loadConfig();
const app = await createApiApp(config);
await app.listen(config.port, config.host);
process.stdout.write(`Strata api listening on ${config.publicUrl} (OpenAPI at ${config.publicUrl}/docs)\n`);
