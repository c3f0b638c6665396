// `tidemark` in Node (18 or later: it needs the global fetch). The wasm-bindgen build for Node
// is CommonJS; node/package.json says so.
import core from './node/tidemark.js';
import { makeSyncClient } from './client.js';

export const SyncClient = makeSyncClient(core);
export { IndexedDbStore, MemoryStore, RecordStore } from './stores.js';
