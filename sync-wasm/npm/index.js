// `tidemark` for bundlers (webpack 5, Rollup with a wasm plugin, Vite with vite-plugin-wasm):
// the wasm is imported as a module, so it is ready when this module is.
import * as core from './bundler/tidemark.js';
import { makeSyncClient } from './client.js';

export const SyncClient = makeSyncClient(core);
export { IndexedDbStore, MemoryStore, RecordStore } from './stores.js';
