export { startWorker } from './main.js';
