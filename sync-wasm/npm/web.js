// `tidemark/web`: plain ES modules in the browser, no bundler. The wasm is fetched next to this
// file and instantiated before the module finishes loading (top-level await).
import init, * as core from './web/tidemark.js';
import { makeSyncClient } from './client.js';

await init();

export const SyncClient = makeSyncClient(core);
export { IndexedDbStore, MemoryStore, RecordStore } from './stores.js';
