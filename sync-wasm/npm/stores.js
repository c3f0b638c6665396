// Ready-made stores for SyncClient: IndexedDbStore for browsers, MemoryStore for tests and
// Node. Both keep the store contract (see README.md, "The store") in one place, RecordStore,
// over a small transaction interface; they differ only in where records live.
//
// A record, as stored:
//   {id, type, data?, deleted?, expires?, hash?, author?, seq, baseSeq, pending: 0 | 1}
// `seq` is the server version the record is (or was edited from), `baseSeq` what a pending
// edit goes out with, `pending` a number because IndexedDB cannot index booleans.
// A synced tombstone is not kept: a deleted object simply has no record.

const STATE = 'state';

// Same content: both deleted, or the same data (as JSON text) and expiry.
function sameContent(record, object) {
  if (record.deleted || object.deleted) return !!record.deleted === !!object.deleted;
  return (
    JSON.stringify(record.data) === JSON.stringify(object.data) &&
    (record.expires ?? null) === (object.expires ?? null)
  );
}

// A record as application code sees it.
function view(record) {
  if (!record || record.deleted) return undefined;
  const { pending, baseSeq, deleted, ...rest } = record;
  return { ...rest, pending: pending === 1 };
}

// A server object as a synced record.
function synced(object) {
  const { deleted, ...rest } = object;
  return { ...rest, type: object.type ?? '', baseSeq: object.seq, pending: 0 };
}

// A pending record as the client reads it (the "local object" of the README).
function local(record) {
  const out = { id: record.id, type: record.type, baseSeq: record.baseSeq };
  if (record.deleted) out.deleted = true;
  else out.data = record.data;
  if (record.expires != null) out.expires = record.expires;
  return out;
}

/** The store contract, over `_tx(write, fn)`: fn gets {get, put, del, all, pending, meta, setMeta}. */
export class RecordStore {
  // --- the glue SyncClient calls --------------------------------------------------------

  loadState() {
    return this._tx(false, (t) => t.meta(STATE));
  }

  saveState(state) {
    return this._tx(true, (t) => t.setMeta(STATE, state));
  }

  getPendingObjects() {
    return this._tx(false, async (t) => (await t.pending()).map(local));
  }

  // Server versions and the new state, in one transaction. A record with a pending edit the
  // client did not know about (made while this sync ran) is kept: the next push meets the
  // server's version as a conflict, and the conflict is resolved then.
  //
  // A first sync brings thousands of objects per page, so this reads the pending edits once
  // (there are few) instead of each object's record, and issues every write without waiting
  // for the one before: IndexedDB runs a transaction's requests in order anyway, and waiting
  // on each one costs a trip through the event loop (100,000 objects took 100 s that way).
  objectsReceived(objects, state) {
    return this._tx(true, async (t) => {
      const pending = new Map((await t.pending()).map((record) => [record.id, record]));
      const writes = [];
      for (const object of objects) {
        const record = pending.get(object.id);
        if (record && !sameContent(record, object)) continue;
        writes.push(object.deleted ? t.del(object.id) : t.put(synced(object)));
      }
      writes.push(t.setMeta(STATE, state));
      await Promise.all(writes);
    });
  }

  // A push was committed. An edit made while it was out stays pending, now based on the new
  // seq (0 after a delete).
  objectsSaved(objects, state) {
    return this._tx(true, async (t) => {
      for (const saved of objects) {
        const record = await t.get(saved.id);
        if (record && record.pending === 1 && !sameContent(record, saved)) {
          await t.put({ ...record, seq: saved.seq, baseSeq: saved.deleted ? 0 : saved.seq });
        } else if (saved.deleted) {
          await t.del(saved.id);
        } else {
          const next = synced(saved);
          if (record?.author !== undefined) next.author = record.author;
          await t.put(next);
        }
      }
      await t.setMeta(STATE, state);
    });
  }

  // The cursor is gone: drop synced records, keep pending edits (based on nothing when the
  // collection's epoch changed), store the state.
  resetSaved(state, { epochChanged }) {
    return this._tx(true, async (t) => {
      for (const record of await t.all()) {
        if (record.pending !== 1) await t.del(record.id);
        else if (epochChanged) await t.put({ ...record, seq: 0, baseSeq: 0 });
      }
      await t.setMeta(STATE, state);
    });
  }

  // A conflict was settled: `object` is the pending edit as it now stands (kept or merged,
  // with its new baseSeq), or null to drop the local edit (the server's version, if any,
  // comes in objectsReceived).
  conflictResolved(id, object) {
    return this._tx(true, async (t) => {
      const record = await t.get(id);
      if (!object) {
        if (record) await t.del(id);
        return;
      }
      const { baseSeq, ...content } = object;
      await t.put({ ...content, type: object.type ?? '', seq: record?.seq ?? 0, baseSeq, pending: 1 });
    });
  }

  // --- for application code -------------------------------------------------------------

  /** Creates or replaces `id` locally; the next sync pushes it. Resolves to the record. */
  async put(id, data, { type = '', expires } = {}) {
    if (data === undefined || data === null) throw new TypeError('tidemark: data must not be null');
    return this._tx(true, async (t) => {
      const record = await t.get(id);
      const base = !record ? 0 : record.pending === 1 ? record.baseSeq : record.seq;
      const next = { id, type, data, seq: record?.seq ?? 0, baseSeq: base, pending: 1 };
      if (expires != null) next.expires = expires;
      await t.put(next);
      return view(next);
    });
  }

  /** Deletes `id` locally (a pending tombstone until the next sync pushes it). */
  delete(id) {
    return this._tx(true, async (t) => {
      const record = await t.get(id);
      if (!record || record.deleted) return false;
      const base = record.pending === 1 ? record.baseSeq : record.seq;
      const { type, seq } = record;
      await t.put({ id, type, deleted: true, seq, baseSeq: base, pending: 1 });
      return true;
    });
  }

  /** The record of `id`, or undefined (never stored, or deleted). */
  get(id) {
    return this._tx(false, async (t) => view(await t.get(id)));
  }

  /** Every live record, by id; `{type}` filters. */
  list({ type } = {}) {
    return this._tx(false, async (t) =>
      (await t.all())
        .map(view)
        .filter((r) => r && (type === undefined || r.type === type)),
    );
  }

  /** The local edits the next sync will push, deletes included: {id, type, data | deleted, baseSeq}. */
  changes() {
    return this.getPendingObjects();
  }
}

/** Records in memory: for tests, Node and pages that need no persistence. */
export class MemoryStore extends RecordStore {
  constructor() {
    super();
    this.records = new Map();
    this.metas = new Map();
    this.queue = Promise.resolve();
  }

  // Transactions run one at a time, on copies that replace the maps only if `fn` succeeds:
  // all or nothing, as with IndexedDB. Values are cloned in and out, as IndexedDB does.
  _tx(write, fn) {
    const run = async () => {
      const records = new Map(this.records);
      const metas = new Map(this.metas);
      const clone = (v) => (v === undefined ? v : structuredClone(v));
      const byId = (a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
      const result = await fn({
        get: (id) => clone(records.get(id)),
        put: (record) => void records.set(record.id, clone(record)),
        del: (id) => void records.delete(id),
        all: () => [...records.values()].sort(byId).map(clone),
        pending: () => [...records.values()].filter((r) => r.pending === 1).sort(byId).map(clone),
        meta: (key) => clone(metas.get(key)),
        setMeta: (key, value) => void metas.set(key, clone(value)),
      });
      if (write) {
        this.records = records;
        this.metas = metas;
      }
      return result;
    };
    const result = this.queue.then(run);
    this.queue = result.catch(() => {});
    return result;
  }
}

const request = (req) =>
  new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });

/**
 * Records in IndexedDB: an object store `objects` (by id, with an index on `pending`) and an
 * object store `meta` (the sync state). Every contract call is one transaction, so received
 * objects and the new cursor land together or not at all.
 */
export class IndexedDbStore extends RecordStore {
  /** Opens (creating if needed) the database `name`. One database per synced collection. */
  static async open(name = 'tidemark') {
    const req = indexedDB.open(name, 1);
    req.onupgradeneeded = () => {
      const db = req.result;
      db.createObjectStore('objects', { keyPath: 'id' }).createIndex('pending', 'pending');
      db.createObjectStore('meta');
    };
    return new IndexedDbStore(await request(req));
  }

  /** Deletes the database `name`. */
  static destroy(name = 'tidemark') {
    return request(indexedDB.deleteDatabase(name)).then(() => undefined);
  }

  constructor(db) {
    super();
    this.db = db;
  }

  close() {
    this.db.close();
  }

  // Only IndexedDB requests are awaited inside `fn`, so the transaction stays active to the
  // end; the result is returned once the transaction has committed.
  async _tx(write, fn) {
    const tx = this.db.transaction(['objects', 'meta'], write ? 'readwrite' : 'readonly');
    const done = new Promise((resolve, reject) => {
      tx.oncomplete = resolve;
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error('tidemark: transaction aborted'));
    });
    const objects = tx.objectStore('objects');
    const meta = tx.objectStore('meta');
    let result;
    try {
      result = await fn({
        get: (id) => request(objects.get(id)),
        put: (record) => request(objects.put(record)),
        del: (id) => request(objects.delete(id)),
        all: () => request(objects.getAll()),
        pending: () => request(objects.index('pending').getAll(1)),
        meta: (key) => request(meta.get(key)),
        setMeta: (key, value) => request(meta.put(value, key)),
      });
    } catch (error) {
      try {
        tx.abort();
      } catch {
        // Already finished.
      }
      done.catch(() => {});
      throw error;
    }
    await done;
    return result;
  }
}
