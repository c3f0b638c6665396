// Types of the `tidemark` package. Written by hand: the wasm's own bindings know only `any`.

/** A server version of an object, as the wire has it: live (`data`) or a tombstone (`deleted`). */
export interface ServerObject<T = unknown> {
  id: string;
  /** The application's type tag; `""` by default. */
  type: string;
  /** The seq of the write that produced this version. */
  seq: number;
  data?: T;
  deleted?: true;
  /** Unix time in ms after which the server turns the object into a tombstone. */
  expires?: number;
  /** The server's SHA-256 (hex) of the data's JSON text. */
  hash?: string;
  /** The user who created the object. */
  author?: string;
}

/** A local edit the server has not acknowledged yet (a "pending object"). */
export interface LocalObject<T = unknown> {
  id: string;
  type: string;
  /** The new data; absent for a delete. Never `null`: the wire reads a null `data` as none. */
  data?: T;
  deleted?: true;
  expires?: number;
  /** The seq of the server version the edit started from; 0 for a new (or re-created) object. */
  baseSeq: number;
}

/** A local edit the server committed, with the seq it got. */
export interface SavedObject<T = unknown> {
  id: string;
  type: string;
  seq: number;
  data?: T;
  deleted?: true;
  expires?: number;
}

/**
 * What a store persists for the client: `sync-core`'s `ReplicaState` as JSON. Treat it as
 * opaque and store it as it is. `in_flight` is the JSON text of a push whose answer is unknown.
 */
export interface SyncState {
  client_id: string;
  collection_id: string | null;
  cursor: number;
  next_push_number: number;
  in_flight: string | null;
  paging_horizon: number | null;
}

/**
 * The glue between the client and the application's storage. Every method may return a
 * promise; the client awaits each before the next. Each call that carries a `state` must store
 * it in the same transaction as the objects, so the cursor never runs ahead of the data.
 */
export interface SyncStore<T = unknown> {
  /** The state last saved, or `null`/`undefined` on the first run. */
  loadState(): SyncState | null | undefined | Promise<SyncState | null | undefined>;
  /** Stores the state (before each push is sent, and when a sync fails). */
  saveState(state: SyncState): void | Promise<void>;
  /** Every local edit the server has not acknowledged, deletes included. */
  getPendingObjects(): LocalObject<T>[] | Promise<LocalObject<T>[]>;
  /**
   * Server versions to store (tombstones: remove the record), clearing their pending flags,
   * and the state, in one transaction. Keep a record whose pending edit was made after this
   * sync started and differs from the server's: the next push settles it as a conflict.
   */
  objectsReceived(objects: ServerObject<T>[], state: SyncState): void | Promise<void>;
  /**
   * A push was committed: give each record its seq and clear its pending flag if its content
   * still equals the saved object's; if it was edited meanwhile, keep it pending with
   * `baseSeq` = the new seq (0 after a delete). Store the state in the same transaction.
   */
  objectsSaved(objects: SavedObject<T>[], state: SyncState): void | Promise<void>;
  /**
   * The server reset the collection (or purged past the cursor): drop every synced record,
   * keep pending edits (with `baseSeq` 0 when `epochChanged`), store the state, in one
   * transaction. The client then pulls everything again.
   */
  resetSaved(state: SyncState, info: { epochChanged: boolean }): void | Promise<void>;
  /**
   * A conflict was settled: `object` is the local edit as it now stands (kept or merged, with
   * its new `baseSeq`), to store as pending; `null` drops the local edit (the server's
   * version, if it has one, comes in `objectsReceived`).
   */
  conflictResolved(id: string, object: LocalObject<T> | null): void | Promise<void>;
}

/** A bearer token, or a function that gets one; the function is called again after a 401. */
export type TokenSource = string | (() => string | Promise<string>);

/**
 * What `resolveConflict` returns: `local` (the local edit wins), `server` or `null` (the
 * server's version wins), or a merged object, `{data}` or `{deleted: true}`.
 */
export type Resolution<T> =
  | LocalObject<T>
  | ServerObject<T>
  | { data: T; expires?: number }
  | { deleted: true }
  | null
  | undefined;

export interface SyncOptions<T = unknown> {
  /** The server, e.g. `https://sync.example.com`. */
  url: string;
  /** `[a-z0-9][a-z0-9._-]{0,63}`. */
  app: string;
  /** `[A-Za-z0-9_.-]{1,64}`. */
  collection: string;
  /** Whose collection; `~` (the default) is the user the token names. */
  owner?: string;
  token: TokenSource;
  /**
   * This installation's id, used only when the store has no state yet; it prefixes every
   * push id, so it must be unique to the store. Default: a random UUID.
   */
  clientId?: string;
  store: SyncStore<T>;
  /**
   * Called when a local edit meets a newer server version (`server` is `null` when the server
   * has no such object). Without it, the server's version wins and the local one is reported
   * in the `conflict` event.
   */
  resolveConflict?(
    local: LocalObject<T>,
    server: ServerObject<T> | null,
  ): Resolution<T> | Promise<Resolution<T>>;
  /** Objects per pull page (default 1000). */
  pullLimit?: number;
  /** Objects per push (default 100; at most the server's `max_batch`). */
  maxBatch?: number;
  /** Conflict or reset answers one sync accepts before it gives up (default 5). */
  maxRounds?: number;
}

export interface SyncResult {
  /** Server versions stored (`objectsReceived`). */
  pulled: number;
  /** Local edits committed (`objectsSaved`). */
  pushed: number;
  conflicts: number;
}

/** How `syncNow` rejects, and the payload of the `error` event. */
export interface SyncError extends Error {
  name: 'SyncError';
  code:
    | 'network'
    | 'unauthorized'
    | 'http'
    | 'contention'
    | 'protocol'
    | 'store'
    | 'callback'
    | 'invalid'
    /** `fetchBlob`: the bytes received do not match the hash asked for. */
    | 'integrity';
  /** The HTTP status, for `unauthorized` and `http`. */
  status?: number;
  /** `Retry-After`, in ms. */
  retryAfter?: number;
  /** The server's error body (`{error, message, details?}`), for `http` and `unauthorized`. */
  body?: unknown;
  /** What the store or callback threw, for `store` and `callback`. */
  cause?: unknown;
}

export interface SyncEvents<T = unknown> {
  status: { status: 'syncing' | 'idle' | 'offline' | 'error' };
  /** During a pull: `loaded` of `total` changes (in seqs), and `pulled` objects so far. */
  progress: { loaded: number; total: number; pulled: number };
  conflict: {
    id: string;
    local: LocalObject<T>;
    server: ServerObject<T> | null;
    resolution: 'server' | 'local' | 'merged';
    /** The local edit as it now stands, or `null` when the server's version won. */
    merged: LocalObject<T> | null;
  };
  error: SyncError;
  reset: { epochChanged: boolean };
  /** Data changed: through this client's sync, or another tab's (`source: 'tab'`). */
  change: { source: 'sync' | 'tab'; pulled: number; pushed: number; reset: boolean };
  /** The scheduler set its next sync for `at` (ms since the epoch), e.g. to show a retry time. */
  schedule: { at: number };
}

export interface StartOptions {
  /** Between periodic syncs, in ms: 300000 (5 minutes) by default, at least 30000. */
  interval?: number;
  /** Between periodic syncs while the page is hidden: 6 × `interval` by default. */
  hiddenInterval?: number;
  /**
   * Follow the collection's live events (where the host has `EventSource`) and sync as soon as
   * another device writes. The data still comes through the pull; the stream only rings.
   */
  live?: boolean;
}

export class SyncClient<T = unknown> {
  constructor(options: SyncOptions<T>);
  /** Pulls every page, pushes pending edits, resolves conflicts. */
  syncNow(): Promise<SyncResult>;
  on<K extends keyof SyncEvents<T>>(event: K, listener: (payload: SyncEvents<T>[K]) => void): void;
  off<K extends keyof SyncEvents<T>>(event: K, listener: (payload: SyncEvents<T>[K]) => void): void;
  /** Syncs now, then periodically, after `notifyChanged`, and when the page becomes visible. */
  start(options?: StartOptions): void;
  stop(): void;
  /** Local data changed: a sync follows in about 500 ms (while started). */
  notifyChanged(): void;
  /** Stops the scheduler and frees the wasm side; the client is not usable afterwards. */
  free(): void;
  /**
   * Stores bytes on the server under their SHA-256 (hex), which it returns; objects refer to
   * blobs by that hash. Rejects with a `SyncError` (`network`, `unauthorized`, `http`).
   */
  uploadBlob(data: Uint8Array | ArrayBuffer | Blob): Promise<string>;
  /** A blob's bytes, checked against the hash: a `SyncError` with code `integrity` if not. */
  fetchBlob(sha256: string): Promise<Uint8Array>;
}

/** A record as application code sees it. */
export interface StoredRecord<T = unknown> {
  id: string;
  type: string;
  data: T;
  /** The server version this record is, or was edited from; 0 if never synced. */
  seq: number;
  /** Edited locally and not yet acknowledged by the server. */
  pending: boolean;
  expires?: number;
  hash?: string;
  author?: string;
}

/** The store contract implemented once; the two stores below differ only in where records live. */
export abstract class RecordStore<T = unknown> implements SyncStore<T> {
  loadState(): Promise<SyncState | undefined>;
  saveState(state: SyncState): Promise<void>;
  getPendingObjects(): Promise<LocalObject<T>[]>;
  objectsReceived(objects: ServerObject<T>[], state: SyncState): Promise<void>;
  objectsSaved(objects: SavedObject<T>[], state: SyncState): Promise<void>;
  resetSaved(state: SyncState, info: { epochChanged: boolean }): Promise<void>;
  conflictResolved(id: string, object: LocalObject<T> | null): Promise<void>;
  /** Creates or replaces `id` locally (pending until pushed). Call `client.notifyChanged()` after. */
  put(id: string, data: T, options?: { type?: string; expires?: number }): Promise<StoredRecord<T>>;
  /** Deletes `id` locally (a pending delete until pushed); false if there was nothing. */
  delete(id: string): Promise<boolean>;
  get(id: string): Promise<StoredRecord<T> | undefined>;
  /** Every live record, by id. */
  list(filter?: { type?: string }): Promise<StoredRecord<T>[]>;
  /** The local edits the next sync pushes, deletes included. */
  changes(): Promise<LocalObject<T>[]>;
}

/** Records in memory, transactional: for tests, Node and pages that need no persistence. */
export class MemoryStore<T = unknown> extends RecordStore<T> {
  constructor();
}

/**
 * Records in IndexedDB: object stores `objects` (by id, indexed on the pending flag) and
 * `meta` (the state). Each store call is one transaction.
 */
export class IndexedDbStore<T = unknown> extends RecordStore<T> {
  /** Opens or creates the database `name` (default `"tidemark"`); one per synced collection. */
  static open<T = unknown>(name?: string): Promise<IndexedDbStore<T>>;
  static destroy(name?: string): Promise<void>;
  close(): void;
}
