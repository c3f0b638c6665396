// `tidemark` in Node (18 or later: it needs the global fetch). The wasm-bindgen build for Node
// is CommonJS; node/package.json says so.
import wasm from './node/tidemark.js';

export const { SyncClient } = wasm;
export { IndexedDbStore, MemoryStore, RecordStore } from './stores.js';
