// One pull into IndexedDB per call, timed in the page: from the start of the sync call (the
// database opened, the client made, the sync run) until it resolves with every record stored.
// Then the records in IndexedDB are counted, outside the timing, straight from the object
// store each SDK writes to. The driver (run.mjs) gives every call a fresh browser profile.
import { IndexedDbStore, SyncClient } from '/vendor/tidemark/web.js';

const request = (req) =>
  new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });

// Counts `store` (or its `index` at `key`) in the database `name`, as IndexedDB holds it.
async function count(name, store, index, key) {
  const db = await request(indexedDB.open(name));
  try {
    const objects = db.transaction(store, 'readonly').objectStore(store);
    return await request(index ? objects.index(index).count(key) : objects.count());
  } finally {
    db.close();
  }
}

// Tidemark: SyncClient over IndexedDbStore, one syncNow from an empty database.
async function tidemark({ url, app, collection, token, pullLimit }) {
  const started = performance.now();
  const store = await IndexedDbStore.open('bench');
  const client = new SyncClient({ url, app, collection, token, store, pullLimit });
  const result = await client.syncNow();
  const ms = performance.now() - started;
  store.close();
  return { ms, pulled: result.pulled, stored: await count('bench', 'objects') };
}

// kinto.js: a collection on its default IndexedDB adapter (the database KintoDB, records keyed
// by [collection, id]), one sync() from an empty database.
async function kinto({ url, bucket, collection, authorization }) {
  const started = performance.now();
  // dist/kinto.min.js is a UMD bundle: the class is the `default` of the global `Kinto`.
  const db = new globalThis.Kinto.default({ remote: `${url}/v1`, bucket, headers: { Authorization: authorization } });
  const result = await db.collection(collection).sync();
  const ms = performance.now() - started;
  if (!result.ok) throw new Error(`kinto.js sync was not ok: ${JSON.stringify(result.errors).slice(0, 500)}`);
  const stored = await count('KintoDB', 'records', 'cid', `${bucket}/${collection}`);
  return { ms, pulled: result.created.length, stored };
}

window.bench = { tidemark, kinto };
document.title = 'ready';
