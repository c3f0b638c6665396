// SyncClient: the JavaScript shell around the wasm core.
//
// The wasm (sync-wasm, Rust) decides everything: which request to send, how an answer reads,
// what the store must save, when to sync next. This file only moves things between it and the
// host: `fetch`, the application's store (each call awaited before the next), timers, the Web
// Lock, the BroadcastChannel, and events. See sync-wasm/src/lib.rs for why the line is here.
//
// One cycle starts from storage, not from memory: it loads the state and the pending edits,
// opens a replica on them, and then only moves messages until the replica says `done` or
// `failed`. That is what makes several tabs safe (under the Web Lock, a tab continues from what
// the previous holder stored, so no push_id is used twice) and a reload resume where it was.

const STORE_METHODS = [
  'loadState',
  'saveState',
  'getPendingObjects',
  'objectsReceived',
  'objectsSaved',
  'resetSaved',
  'conflictResolved',
];

// A SyncError: an Error with `code` (network, unauthorized, http, contention, protocol, store,
// callback, invalid) and, where they apply, status, retryAfter, body and cause.
function syncError(code, message, extra) {
  const error = Object.assign(new Error(message), extra);
  error.name = 'SyncError';
  error.code = code;
  return error;
}

const invalid = (message) => syncError('invalid', message);

// Whole seconds in a header, as ms.
function seconds(value) {
  return value && /^\s*\d+\s*$/.test(value) ? Number(value) * 1000 : undefined;
}

// Retry-After: seconds, or an HTTP date.
function retryAfter(value) {
  const ms = seconds(value);
  if (ms !== undefined || !value) return ms;
  const at = Date.parse(value);
  return Number.isFinite(at) ? Math.max(0, at - Date.now()) : undefined;
}

// One exchange. `null`: no answer (offline, reset, CORS refusal, or a success whose body was
// cut short), so a push may or may not have been committed.
async function exchange(method, url, token, body) {
  const headers = { Authorization: 'Bearer ' + token };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  let text;
  try {
    response = await fetch(url, { method, headers, body });
  } catch {
    return null;
  }
  const { status } = response;
  try {
    text = await response.text();
  } catch {
    if (status >= 200 && status < 300) return null;
  }
  let parsed;
  try {
    parsed = text === undefined ? undefined : JSON.parse(text);
  } catch {}
  const header = (name) => response.headers.get(name);
  return {
    status,
    body: parsed,
    backoff: seconds(header('backoff')),
    retryAfter: retryAfter(header('retry-after')),
    poll: seconds(header('x-sync-poll-time')),
  };
}

function randomId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  let id = '';
  for (let i = 0; i < 4; i++) id += ((Math.random() * 2 ** 32) >>> 0).toString(16).padStart(8, '0');
  return id;
}

const pageHidden = () => globalThis.document?.visibilityState === 'hidden';

async function sha256(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

// Bytes from what an application holds: a Uint8Array (or any view), an ArrayBuffer, a Blob.
async function toBytes(data) {
  if (typeof Blob === 'function' && data instanceof Blob) return new Uint8Array(await data.arrayBuffer());
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  throw new TypeError('tidemark: a blob is a Uint8Array, an ArrayBuffer or a Blob');
}

// Builds the SyncClient class over a wasm core: {checkOptions, openReplica, newScheduler}.
export function makeSyncClient(core) {
  return class SyncClient {
    #o;
    #token;
    #listeners = [];
    #queued = null;
    #tail = Promise.resolve();
    #plan = core.newScheduler();
    #started = false;
    #running = false;
    #dirty = false;
    #timer = null;
    #due = 0;
    #unlisten = [];
    #channel = null;
    #hints;
    #errorBody;
    #live = null;
    #wantLive = false;
    #lastOk = false;
    // The highest seq the live stream announced while a cycle ran.
    #rung = 0;
    // The cursor the store last reached, as far as this client saw it: live events below it
    // are this client's own writes or already pulled.
    #cursor = 0;

    constructor(options) {
      const o = options ?? {};
      const bad = (what) => new TypeError('tidemark: options.' + what + ' is missing or not valid');
      if (typeof o.url !== 'string') throw bad('url');
      const name = core.checkOptions(o.app, o.owner, o.collection, o.clientId);
      if (name) throw bad(name);
      if (typeof o.token !== 'string' && typeof o.token !== 'function') throw bad('token');
      for (const method of STORE_METHODS) {
        if (typeof o.store?.[method] !== 'function') throw bad('store.' + method);
      }
      const resolve = typeof o.resolveConflict === 'function' ? o.resolveConflict : undefined;
      const listing = o.url.replace(/\/+$/, '') + '/v1/data/' + encodeURIComponent(o.app) + '/' +
        encodeURIComponent(o.owner ?? '~');
      this.#o = {
        listing,
        url: listing + '/' + encodeURIComponent(o.collection),
        collection: o.collection,
        token: o.token,
        store: o.store,
        resolve,
        clientId: o.clientId,
        config: { pullLimit: o.pullLimit, maxBatch: o.maxBatch, maxRounds: o.maxRounds, manual: !!resolve },
      };
    }

    // --- events ---------------------------------------------------------------------------

    on(event, listener) {
      this.#listeners.push([event, listener]);
    }

    off(event, listener) {
      this.#listeners = this.#listeners.filter(([e, l]) => !(e === event && l === listener));
    }

    // A listener that throws stops neither the others nor the sync.
    #emit(event, payload) {
      for (const [e, listener] of this.#listeners) {
        if (e !== event) continue;
        try {
          listener(payload);
        } catch {}
      }
    }

    // --- requests -------------------------------------------------------------------------

    async #store(method, ...args) {
      try {
        return await this.#o.store[method](...args);
      } catch (cause) {
        throw syncError('store', 'a store method failed', { cause });
      }
    }

    async #callback(fn, ...args) {
      try {
        return await fn(...args);
      } catch (cause) {
        throw syncError('callback', 'the token function or resolveConflict failed', { cause });
      }
    }

    async #getToken(refresh) {
      const source = this.#o.token;
      if (typeof source === 'string') return source;
      if (!refresh && this.#token !== undefined) return this.#token;
      const token = await this.#callback(source);
      if (typeof token !== 'string') throw invalid('the token function must return a string');
      return (this.#token = token);
    }

    // `attempt(token)` with the current token; after a 401, asks the token function once more
    // and tries again.
    async #authorized(attempt) {
      let refreshed = false;
      for (;;) {
        const answer = await attempt(await this.#getToken(refreshed));
        if (answer?.status !== 401 || typeof this.#o.token !== 'function' || refreshed) return answer;
        refreshed = true;
      }
    }

    // One exchange with the token; the answer's timing hints are kept for the scheduler.
    async #send(method, url, body) {
      const answer = await this.#authorized((token) => exchange(method, url, token, body));
      if (answer) {
        const hints = this.#hints;
        if (answer.status >= 200 && answer.status < 300) {
          hints.backoff = Math.max(hints.backoff ?? 0, answer.backoff ?? 0) || undefined;
          hints.poll = answer.poll ?? hints.poll;
        } else {
          hints.retryAfter = answer.retryAfter;
          this.#errorBody = answer.body;
        }
      }
      return answer;
    }

    // --- blobs ----------------------------------------------------------------------------

    // Stores bytes on the server under their SHA-256, which it returns; objects refer to blobs
    // by that hash. The server checks the hash too.
    async uploadBlob(data) {
      const bytes = await toBytes(data);
      const hash = await sha256(bytes);
      const response = await this.#blobRequest(hash, {
        method: 'PUT',
        body: bytes,
        headers: { 'Content-Type': 'application/octet-stream' },
      });
      await response.arrayBuffer().catch(() => {});
      return hash;
    }

    // The bytes of a blob, checked against their hash: a SyncError with code `integrity` if
    // what arrived is not what was asked for.
    async fetchBlob(hash) {
      const response = await this.#blobRequest(hash, { method: 'GET' });
      let bytes;
      try {
        bytes = new Uint8Array(await response.arrayBuffer());
      } catch {
        throw syncError('network', 'the server could not be reached');
      }
      if ((await sha256(bytes)) !== hash) {
        throw syncError('integrity', 'the blob received does not match its hash');
      }
      return bytes;
    }

    async #blobRequest(hash, init) {
      if (!/^[0-9a-f]{64}$/.test(hash)) throw new TypeError('tidemark: a blob hash is 64 lowercase hex digits');
      const url = this.#o.url + '/blobs/' + hash;
      const response = await this.#authorized(async (token) => {
        try {
          return await fetch(url, { ...init, headers: { ...init.headers, Authorization: 'Bearer ' + token } });
        } catch {
          return null;
        }
      });
      if (!response) throw syncError('network', 'the server could not be reached');
      if (!response.ok) {
        const body = await response.json().catch(() => undefined);
        const code = response.status === 401 ? 'unauthorized' : 'http';
        throw syncError(code, 'the server answered with an error', { status: response.status, body });
      }
      return response;
    }

    // The collection's last_seq, for progress; undefined if the listing does not say.
    async #head() {
      try {
        const answer = await this.#send('GET', this.#o.listing);
        const found = answer?.body?.collections?.find?.((c) => c?.name === this.#o.collection);
        return typeof found?.last_seq === 'number' ? found.last_seq : undefined;
      } catch {
        return undefined;
      }
    }

    // --- one cycle ------------------------------------------------------------------------

    async #runCycle() {
      const state = await this.#store('loadState');
      const pending = await this.#store('getPendingObjects');
      let replica;
      try {
        replica = core.openReplica(state ?? null, this.#o.clientId ?? randomId(), this.#o.config, pending);
      } catch (e) {
        throw invalid(e.message);
      }
      try {
        const progress = { start: (this.#cursor = replica.cursor()), head: undefined, pulled: 0 };
        let reset = false;
        replica.startSync();
        for (;;) {
          for (let event; (event = replica.pollEvent()); ) {
            switch (event.type) {
              case 'received':
                progress.pulled += event.objects.length;
                await this.#store('objectsReceived', event.objects, event.state);
                this.#cursor = event.state.cursor;
                this.#progress(progress, event.state.cursor);
                break;
              case 'saved':
                await this.#store('objectsSaved', event.objects, event.state);
                this.#cursor = event.state.cursor;
                break;
              case 'reset': {
                const info = { epochChanged: event.epochChanged };
                await this.#store('resetSaved', event.state, info);
                this.#emit('reset', info);
                progress.start = 0;
                reset = true;
                break;
              }
              case 'conflict':
                await this.#conflict(replica, event);
                break;
              case 'done':
                return { pulled: event.pulled, pushed: event.pushed, conflicts: event.conflicts, reset };
              default: {
                // 'failed': the replica may have dropped a push the server refused; the stored
                // state must forget it too.
                await this.#store('saveState', replica.state());
                const { type, code, message, ...extra } = event;
                if (extra.status !== undefined) extra.body = this.#errorBody;
                throw syncError(code, message, extra);
              }
            }
          }
          const request = replica.pollRequest();
          // Every conflict is resolved as it comes, so there is always a request here.
          if (!request) throw invalid('the replica stopped without ending its cycle');
          // Recorded as in flight before it leaves: a lost answer is resent as it was.
          if (request.push) await this.#store('saveState', replica.state());
          const answer = request.push
            ? await this.#send('POST', this.#o.url, request.body)
            : await this.#send('GET', this.#o.url + request.query);
          if (progress.head === undefined && !request.push && answer?.status === 200 && answer.body?.more === true) {
            progress.head = (await this.#head()) ?? 0;
          }
          replica.handleAnswer(answer ? answer.status : 0, answer?.body, answer?.retryAfter);
        }
      } finally {
        replica.free();
      }
    }

    #progress(progress, cursor) {
      const loaded = Math.max(0, cursor - progress.start);
      const total = progress.head === undefined ? loaded : Math.max(progress.head - progress.start, loaded);
      this.#emit('progress', { loaded, total, pulled: progress.pulled });
    }

    // A pending edit met a newer server version. With resolveConflict the application decides;
    // without it the replica (server wins) already has. Either way the store hears what the
    // local record now is, and a `conflict` event reports it.
    async #conflict(replica, { id, local, server, outcome }) {
      let resolution = outcome;
      if (outcome === 'awaiting') {
        if (!this.#o.resolve) throw invalid('a conflict waits but there is no resolveConflict');
        const merged = await this.#callback(this.#o.resolve, local, server);
        resolution = merged == null || merged === server ? 'server' : merged === local ? 'local' : 'merged';
        try {
          replica.resolve(id, resolution, merged);
        } catch (e) {
          throw invalid(e.message);
        }
      }
      const merged = replica.pendingRecord(id);
      await this.#store('conflictResolved', id, merged);
      this.#emit('conflict', { id, local, server, resolution, merged });
    }

    // One cycle with its bookkeeping: `status` before and after, `error` or `change` after, the
    // outcome recorded for the scheduler, and the other tabs told.
    async #cycle() {
      this.#hints = {};
      this.#emit('status', { status: 'syncing' });
      let totals;
      let error;
      try {
        totals = await this.#runCycle();
      } catch (e) {
        error = e?.name === 'SyncError' ? e : syncError('invalid', String(e?.message ?? e), { cause: e });
      }
      const now = Date.now();
      this.#lastOk = !error;
      if (error) {
        this.#plan.failed(now, error.code === 'http' ? error.retryAfter : undefined, error.code === 'network', Math.random());
        this.#emit('status', { status: error.code === 'network' ? 'offline' : 'error' });
        this.#emit('error', error);
        throw error;
      }
      this.#plan.synced(now, this.#hints.backoff, this.#hints.poll, Math.random());
      this.#emit('status', { status: 'idle' });
      const { pulled, pushed, conflicts, reset } = totals;
      if (pulled + pushed > 0 || reset) {
        const change = { pulled, pushed, reset };
        this.#channel?.postMessage(change);
        this.#emit('change', { ...change, source: 'sync' });
      }
      return { pulled, pushed, conflicts };
    }

    // A cycle inside the Web Lock, where the host has Web Locks: one tab at a time.
    #lockedCycle() {
      const locks = globalThis.navigator?.locks;
      return locks?.request ? locks.request(this.#o.url, () => this.#cycle()) : this.#cycle();
    }

    // Cycles run one after another; calls made while one waits to start share it, since it
    // will see all their edits.
    syncNow() {
      if (this.#queued) return this.#queued;
      const previous = this.#tail;
      const next = (async () => {
        await previous.catch(() => {});
        this.#queued = null;
        this.#running = true;
        try {
          return await this.#lockedCycle();
        } finally {
          this.#afterCycle();
        }
      })();
      this.#queued = this.#tail = next;
      return next;
    }

    // --- the scheduler ----------------------------------------------------------------------

    start(options) {
      this.stop();
      this.#plan.setPolicy(options?.interval, options?.hiddenInterval);
      this.#started = true;
      const listen = (target, event, handler) => {
        if (typeof target?.addEventListener !== 'function') return;
        target.addEventListener(event, handler);
        this.#unlisten.push(() => target.removeEventListener(event, handler));
      };
      listen(globalThis.document, 'visibilitychange', () => pageHidden() || this.#syncSoon(false));
      listen(globalThis, 'online', () => {
        this.#plan.online(Date.now());
        this.#syncSoon(false);
      });
      if (typeof BroadcastChannel === 'function') {
        this.#channel = new BroadcastChannel(this.#o.url);
        listen(this.#channel, 'message', (e) => {
          if (e.data && typeof e.data === 'object') this.#emit('change', { ...e.data, source: 'tab' });
        });
      }
      this.#wantLive = !!options?.live;
      this.#syncSoon(false);
    }

    stop() {
      this.#started = false;
      this.#dirty = false;
      this.#wantLive = false;
      this.#live?.close();
      this.#live = null;
      clearTimeout(this.#timer);
      this.#timer = null;
      for (const remove of this.#unlisten.splice(0)) remove();
      this.#channel?.close();
      this.#channel = null;
    }

    notifyChanged() {
      this.#syncSoon(true);
    }

    // Stops the scheduler and releases the wasm memory the client holds. The client is not
    // usable afterwards.
    free() {
      this.stop();
      this.#plan.free();
    }

    // A sync soon: after a local change (debounced) or when the page becomes visible or the
    // network comes back. Never before the server allows, and never later than a timer that
    // is already due sooner.
    #syncSoon(changed) {
      if (!this.#started) return;
      if (this.#running) {
        this.#dirty = true;
        return;
      }
      const now = Date.now();
      const delay = this.#plan.soonDelay(now, changed);
      if (this.#timer !== null && this.#due <= now + delay) return;
      this.#setTimer(delay);
    }

    #setTimer(delay) {
      clearTimeout(this.#timer);
      this.#due = Date.now() + delay;
      this.#timer = setTimeout(() => this.#tick(), delay);
      this.#emit('schedule', { at: this.#due });
    }

    // Live mode: the collection's event stream (where the host has EventSource) rings for a
    // sync when someone else writes. The data still comes through the pull, into the store,
    // so the cursor and the data never part ways. Opened after a successful sync, with the
    // cursor and token it used; when the stream fails for good (a 401, the server gone), a
    // sync follows, and its success opens a new stream, so reconnecting follows the
    // scheduler's backoff.
    async #openLive() {
      if (!this.#wantLive || this.#live || typeof EventSource !== 'function') return;
      let token;
      try {
        token = await this.#getToken(false);
      } catch {
        return;
      }
      if (!this.#wantLive || this.#live) return;
      const url = this.#o.url + '/events?since=' + this.#cursor + '&access_token=' + encodeURIComponent(token);
      const source = (this.#live = new EventSource(url));
      // A change at or below the cursor is already here. One announced during a cycle may be
      // this client's own push, whose answer has not been read yet: it is weighed against the
      // cursor once the cycle ends.
      const ring = (event) => {
        const seq = Number(event.lastEventId) || Infinity;
        if (this.#running) this.#rung = Math.max(this.#rung, seq);
        else if (seq > this.#cursor) this.#syncSoon(false);
      };
      source.addEventListener('change', ring);
      source.addEventListener('reset', () => this.#syncSoon(false));
      source.addEventListener('error', () => {
        if (source.readyState !== EventSource.CLOSED || this.#live !== source) return;
        this.#live = null;
        this.#syncSoon(false);
      });
    }

    #tick() {
      this.#timer = null;
      if (this.#running) {
        this.#dirty = true;
        return;
      }
      // Caught: a failed scheduled sync has gone out as an `error` event.
      this.syncNow().catch(() => {});
    }

    // After any cycle: schedule the next one, if the scheduler runs.
    #afterCycle() {
      this.#running = false;
      if (!this.#started) return;
      const now = Date.now();
      const dirty = this.#dirty;
      const rung = this.#rung > this.#cursor;
      this.#dirty = false;
      this.#rung = 0;
      const delay = dirty
        ? this.#plan.soonDelay(now, true)
        : rung
          ? this.#plan.soonDelay(now, false)
          : this.#plan.periodicDelay(now, pageHidden());
      this.#setTimer(delay);
      if (this.#wantLive && !this.#live && this.#lastOk) this.#openLive().catch(() => {});
    }
  };
}
