// `tidemark` for bundlers (webpack 5, Rollup with a wasm plugin, Vite with vite-plugin-wasm):
// the wasm is imported as a module, so it is ready when this module is.
export { SyncClient } from './bundler/tidemark.js';
export { IndexedDbStore, MemoryStore, RecordStore } from './stores.js';
