// `tidemark/web`: plain ES modules in the browser, no bundler. The wasm is fetched next to this
// file and instantiated before the module finishes loading (top-level await).
import init, { SyncClient } from './web/tidemark.js';

await init();

export { SyncClient };
export { IndexedDbStore, MemoryStore, RecordStore } from './stores.js';
