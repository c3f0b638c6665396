// The SDK's end-to-end scenarios, against a real sync-server. The same code runs in headless
// Chromium (tests/browser.rs, with IndexedDbStore) and in Node (tests/node/sdk.test.mjs, with
// MemoryStore): only the context differs.
//
// ctx = {
//   env: {url, app, token, expiredToken},   // JWTs minted by scripts/test-sdk.sh
//   makeClient(options) -> SyncClient,
//   makeStore(name) -> Promise<store>,      // a fresh, empty store for `name`
// }

const fail = (message) => {
  throw new Error(message);
};

function assertEqual(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) fail(`${what}: expected ${e}, got ${a}`);
}

function assert(condition, what) {
  if (!condition) fail(what);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(condition, what, ms = 5000) {
  const end = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > end) fail(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

let counter = 0;
const unique = (prefix) =>
  `${prefix}-${Date.now().toString(36)}-${(counter++).toString(36)}${Math.random().toString(36).slice(2, 6)}`;

// What a scenario needs: a fresh collection, clients on it, and raw HTTP as "another device".
function setup(ctx, name) {
  const collection = unique(name);
  const base = `${ctx.env.url}/v1/data/${ctx.env.app}/~/${collection}`;
  const raw = async (method, query = '', body) => {
    const response = await fetch(base + query, {
      method,
      headers: { Authorization: `Bearer ${ctx.env.token}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : undefined };
  };
  return {
    collection,
    client: (store, options = {}) => {
      const client = ctx.makeClient({
        url: ctx.env.url,
        app: ctx.env.app,
        collection,
        token: ctx.env.token,
        store,
        ...options,
      });
      const events = { status: [], progress: [], conflict: [], error: [], reset: [], change: [] };
      for (const name of Object.keys(events)) client.on(name, (e) => events[name].push(e));
      client.events = events;
      return client;
    },
    store: () => ctx.makeStore(unique(name)),
    // The server's current objects, by id.
    serverObjects: async () => {
      const answer = await raw('GET', '?since=0');
      assertEqual(answer.status, 200, 'pull status');
      return Object.fromEntries(answer.body.objects.map((o) => [o.id, o]));
    },
    // Another device writes `id` over whatever the server has.
    otherWrites: async (id, data) => {
      const current = (await raw('GET', '?since=0')).body.objects.find((o) => o.id === id);
      const object = { id, base_seq: current?.seq ?? 0 };
      if (data === undefined) object.deleted = true;
      else object.data = data;
      const answer = await raw('POST', '', { objects: [object] });
      assertEqual(answer.status, 200, `the other device's write of ${id}`);
      return answer.body;
    },
    raw,
  };
}

// Replaces the global fetch until the returned `restore()`: records every request, and lets a
// test act before the next POST reaches the server (`beforePost`) or lose its answer
// (`loseAnswer`: the server commits, the client hears nothing).
function interceptFetch({ beforePost, loseAnswer } = {}) {
  const real = globalThis.fetch;
  const seen = [];
  let armed = true;
  globalThis.fetch = async (input, init) => {
    const request = input instanceof Request ? input : new Request(input, init);
    const body = request.method === 'POST' ? await request.clone().text() : undefined;
    seen.push({ method: request.method, url: request.url, body });
    if (request.method === 'POST' && armed && request.url.includes('/v1/data/')) {
      const hook = { beforePost, loseAnswer };
      if (beforePost || loseAnswer) armed = false;
      if (hook.beforePost) {
        globalThis.fetch = real;
        await hook.beforePost();
        globalThis.fetch = intercepted;
      }
      const response = await real(request);
      if (hook.loseAnswer) {
        await response.text();
        throw new TypeError('Failed to fetch (answer lost on purpose)');
      }
      return response;
    }
    return real(request);
  };
  const intercepted = globalThis.fetch;
  return {
    seen,
    posts: () => seen.filter((r) => r.method === 'POST').map((r) => JSON.parse(r.body)),
    restore: () => {
      globalThis.fetch = real;
    },
  };
}

async function rejects(promise, what) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  fail(`${what} should have failed`);
}

// --- the scenarios ---------------------------------------------------------------------

export async function pushPullAndPaging(ctx) {
  const t = setup(ctx, 'paging');
  const storeA = await t.store();
  const a = t.client(storeA, { maxBatch: 3 });
  for (let i = 0; i < 7; i++) await storeA.put(`o${i}`, { n: i }, { type: 'todo' });
  assertEqual((await storeA.changes()).length, 7, 'pending before the push');
  assertEqual(await a.syncNow(), { pulled: 0, pushed: 7, conflicts: 0 }, 'first sync of A');
  const onServer = await t.serverObjects();
  assertEqual(Object.keys(onServer).length, 7, 'objects on the server');
  assertEqual((await storeA.changes()).length, 0, 'nothing pending after the push');
  const o3 = await storeA.get('o3');
  assertEqual([o3.pending, o3.seq, o3.type], [false, onServer.o3.seq, 'todo'], 'o3 in A');

  const storeB = await t.store();
  const b = t.client(storeB, { pullLimit: 2 });
  assertEqual(await b.syncNow(), { pulled: 7, pushed: 0, conflicts: 0 }, 'B pulls everything');
  const list = await storeB.list();
  assertEqual(list.map((r) => [r.id, r.data.n, r.pending]), [0, 1, 2, 3, 4, 5, 6].map((n) => [`o${n}`, n, false]), 'B');
  assertEqual(b.events.progress.map((p) => [p.loaded, p.total]), [[2, 7], [4, 7], [6, 7], [7, 7]], 'progress of the paged pull');
  assertEqual((await storeB.loadState()).cursor, 7, "B's stored cursor");
  assertEqual(await b.syncNow(), { pulled: 0, pushed: 0, conflicts: 0 }, 'nothing new');
}

export async function conflictOnTheCollectionIsRebased(ctx) {
  const t = setup(ctx, 'collection-conflict');
  const store = await t.store();
  const b = t.client(store);
  await store.put('mine', { v: 1 });
  // Another device commits after B's pull and before B's push: the push's `since` is stale.
  const spy = interceptFetch({ beforePost: () => t.otherWrites('theirs', { v: 2 }) });
  try {
    assertEqual(await b.syncNow(), { pulled: 1, pushed: 1, conflicts: 0 }, 'B after a 409');
  } finally {
    spy.restore();
  }
  const posts = spy.posts();
  assertEqual(posts.length, 2, 'pushes: the refused one and the retry');
  assertEqual([posts[0].since, posts[1].since], [0, 1], 'the retry is rebased on the changes');
  assert(posts[0].push_id !== posts[1].push_id, 'a new push gets a new push_id');
  assertEqual(Object.keys(await t.serverObjects()), ['theirs', 'mine'], 'both writes on the server');
  assertEqual((await store.get('theirs')).data, { v: 2 }, "the other device's write in B");
}

export async function conflictOnAnObjectServerWinsByDefault(ctx) {
  const t = setup(ctx, 'server-wins');
  await t.otherWrites('x', { title: 'first' });
  const store = await t.store();
  const b = t.client(store);
  await b.syncNow();
  await store.put('x', { title: 'mine' });
  const spy = interceptFetch({ beforePost: () => t.otherWrites('x', { title: 'theirs' }) });
  try {
    assertEqual(await b.syncNow(), { pulled: 1, pushed: 0, conflicts: 1 }, 'B after a stale_base 409');
  } finally {
    spy.restore();
  }
  const [conflict] = b.events.conflict;
  assertEqual(
    [conflict.id, conflict.resolution, conflict.local.data, conflict.server.data, conflict.merged],
    ['x', 'server', { title: 'mine' }, { title: 'theirs' }, null],
    'the conflict event reports the local version',
  );
  const x = await store.get('x');
  assertEqual([x.data, x.pending], [{ title: 'theirs' }, false], 'the server version in B');
  assertEqual((await t.serverObjects()).x.data, { title: 'theirs' }, 'the server keeps its version');
}

export async function conflictOnAnObjectIsMerged(ctx) {
  const t = setup(ctx, 'merge');
  await t.otherWrites('x', { tags: ['a'] });
  const store = await t.store();
  const resolveConflict = (local, server) => ({
    data: { tags: [...new Set([...server.data.tags, ...local.data.tags])].sort() },
  });
  const b = t.client(store, { resolveConflict });
  await b.syncNow();
  await store.put('x', { tags: ['a', 'mine'] });
  const spy = interceptFetch({ beforePost: () => t.otherWrites('x', { tags: ['a', 'theirs'] }) });
  try {
    assertEqual(await b.syncNow(), { pulled: 0, pushed: 1, conflicts: 1 }, 'B merges and pushes');
  } finally {
    spy.restore();
  }
  const merged = { tags: ['a', 'mine', 'theirs'] };
  assertEqual(b.events.conflict.map((c) => [c.resolution, c.merged.data]), [['merged', merged]], 'conflict event');
  assertEqual((await t.serverObjects()).x.data, merged, 'the merge on the server');
  const x = await store.get('x');
  assertEqual([x.data, x.pending], [merged, false], 'the merge in B, synced');
}

export async function conflictInAPulledPageLocalWins(ctx) {
  const t = setup(ctx, 'local-wins');
  await t.otherWrites('x', { v: 1 });
  const store = await t.store();
  const b = t.client(store, { resolveConflict: (local) => local });
  await b.syncNow();
  await store.put('x', { v: 'mine' });
  await t.otherWrites('x', { v: 'theirs' });
  // The pull brings the other write: the conflict is found before anything is pushed.
  assertEqual(await b.syncNow(), { pulled: 0, pushed: 1, conflicts: 1 }, 'B keeps its edit');
  assertEqual(b.events.conflict[0].resolution, 'local', 'resolution');
  const onServer = (await t.serverObjects()).x;
  assertEqual([onServer.data, onServer.seq], [{ v: 'mine' }, 3], 'the local edit won, based on seq 2');
  assertEqual((await store.get('x')).pending, false, 'synced');
}

export async function tombstonesTravel(ctx) {
  const t = setup(ctx, 'tombstone');
  const storeA = await t.store();
  const storeB = await t.store();
  const a = t.client(storeA);
  const b = t.client(storeB);
  await storeA.put('x', { v: 1 });
  await storeA.put('y', { v: 1 });
  await a.syncNow();
  await b.syncNow();
  assertEqual((await storeB.list()).map((r) => r.id), ['x', 'y'], 'B before the delete');
  assertEqual(await storeA.delete('x'), true, 'local delete');
  assertEqual((await storeA.changes()).map((c) => [c.id, c.deleted, c.baseSeq]), [['x', true, 1]], 'pending tombstone');
  assertEqual(await storeA.get('x'), undefined, 'deleted locally at once');
  assertEqual(await a.syncNow(), { pulled: 0, pushed: 1, conflicts: 0 }, 'A pushes the delete');
  const onServer = await t.serverObjects();
  assertEqual([onServer.x.deleted, onServer.x.seq, onServer.x.data], [true, 3, undefined], 'tombstone on the server');
  assertEqual(await b.syncNow(), { pulled: 1, pushed: 0, conflicts: 0 }, 'B pulls the tombstone');
  assertEqual((await storeB.list()).map((r) => r.id), ['y'], 'B after the delete');
}

export async function resetAfterAServerSideDelete(ctx) {
  const t = setup(ctx, 'reset');
  const store = await t.store();
  const a = t.client(store);
  await store.put('old1', { v: 1 });
  await store.put('old2', { v: 1 });
  await a.syncNow();
  const before = (await store.loadState()).collection_id;
  assertEqual((await t.raw('DELETE')).status < 300, true, 'server-side DELETE');
  await store.put('kept', { v: 'pending across the reset' });
  const result = await a.syncNow();
  assertEqual(result.pushed, 1, 'the pending edit is pushed into the new epoch');
  assertEqual(a.events.reset, [{ epochChanged: true }], 'reset event');
  assertEqual((await store.list()).map((r) => [r.id, r.pending]), [['kept', false]], 'old data dropped');
  const state = await store.loadState();
  assert(state.collection_id && state.collection_id !== before, 'a new collection_id');
  assertEqual(Object.keys(await t.serverObjects()), ['kept'], 'the server after the reset');
}

export async function unauthorizedThenTokenRefresh(ctx) {
  const t = setup(ctx, 'refresh');
  const store = await t.store();
  const tokens = [ctx.env.expiredToken, ctx.env.token];
  let calls = 0;
  const a = t.client(store, { token: async () => tokens[Math.min(calls++, 1)] });
  await store.put('x', { v: 1 });
  assertEqual(await a.syncNow(), { pulled: 0, pushed: 1, conflicts: 0 }, 'sync after a refresh');
  assertEqual(calls, 2, 'the token function was asked again after the 401');
  assertEqual(await a.syncNow(), { pulled: 0, pushed: 0, conflicts: 0 }, 'the new token is kept');
  assertEqual(calls, 2, 'no further calls while the token works');

  const fixed = t.client(await t.store(), { token: ctx.env.expiredToken });
  const error = await rejects(fixed.syncNow(), 'a sync with an expired fixed token');
  assertEqual([error.name, error.code, error.status], ['SyncError', 'unauthorized', 401], 'the error');
  assertEqual(fixed.events.error.length, 1, 'error event');
  assertEqual(fixed.events.status.map((s) => s.status), ['syncing', 'error'], 'status events');
}

export async function lostAnswerIsResentWithTheSamePushId(ctx) {
  const t = setup(ctx, 'lost-answer');
  const store = await t.store();
  await store.put('x', { v: 1 });
  const spy = interceptFetch({ loseAnswer: true });
  let posts;
  try {
    const a = t.client(store);
    const error = await rejects(a.syncNow(), 'the sync whose answer is lost');
    assertEqual(error.code, 'network', 'error code');
    assert((await store.loadState()).in_flight !== null, 'the push is stored as in flight');
    // A reload: a new client on the same store resends the stored push as it was.
    const reloaded = t.client(store);
    assertEqual(await reloaded.syncNow(), { pulled: 0, pushed: 1, conflicts: 0 }, 'after the reload');
    posts = spy.posts();
  } finally {
    spy.restore();
  }
  assertEqual(posts.length, 2, 'the push and its resend');
  assertEqual(posts[1], posts[0], 'resent unchanged, with the same push_id');
  const page = (await t.raw('GET', '?since=0')).body;
  assertEqual([page.until, page.objects.length], [1, 1], 'written once: one seq, one object');
  const x = await store.get('x');
  assertEqual([x.seq, x.pending], [1, false], 'the replayed answer is applied');
  assertEqual((await store.loadState()).in_flight, null, 'nothing in flight');
}

export async function resumesFromTheStoredCursor(ctx) {
  const t = setup(ctx, 'resume');
  await t.otherWrites('a', { v: 1 });
  await t.otherWrites('b', { v: 1 });
  const store = await t.store();
  await t.client(store).syncNow();
  await t.otherWrites('c', { v: 1 });
  await store.put('mine', { v: 1 });
  const spy = interceptFetch();
  try {
    const reloaded = t.client(store);
    assertEqual(await reloaded.syncNow(), { pulled: 1, pushed: 1, conflicts: 0 }, 'after the reload');
  } finally {
    spy.restore();
  }
  const pull = spy.seen.find((r) => r.method === 'GET');
  assert(pull.url.includes('?since=2&'), `the pull starts at the stored cursor: ${pull.url}`);
}

export async function schedulerSyncsOnStartAndAfterChanges(ctx) {
  const t = setup(ctx, 'scheduler');
  const store = await t.store();
  const a = t.client(store);
  a.start({ interval: 60_000 });
  try {
    await until(() => a.events.status.some((s) => s.status === 'idle'), 'the first sync');
    await store.put('x', { v: 1 });
    const asked = Date.now();
    a.notifyChanged();
    a.notifyChanged();
    await until(async () => (await t.serverObjects()).x !== undefined, 'the debounced push');
    const waited = Date.now() - asked;
    assert(waited >= 400, `debounced (${waited} ms)`);
    await until(() => a.events.status.filter((s) => s.status === 'idle').length === 2, 'the second cycle to end');
    await sleep(700);
    assertEqual(a.events.status.filter((s) => s.status === 'syncing').length, 2, 'one sync per burst of changes');
  } finally {
    a.stop();
  }
}

// Browsers only: Web Locks and BroadcastChannel across two clients (as in two tabs).
export async function tabsTakeTurnsAndHearEachOther(ctx) {
  assert(navigator.locks, 'this browser has Web Locks');
  const t = setup(ctx, 'tabs');
  const shared = await t.store();
  const one = t.client(shared);
  const two = t.client(shared);
  let running = 0;
  let overlap = false;
  for (const client of [one, two]) {
    client.on('status', ({ status }) => {
      if (status === 'syncing') overlap ||= ++running > 1;
      else running--;
    });
  }
  one.start({ interval: 60_000 });
  two.start({ interval: 60_000 });
  try {
    await shared.put('x', { v: 1 });
    await Promise.all([one.syncNow(), two.syncNow(), one.syncNow(), two.syncNow()]);
    assert(!overlap, 'cycles of the two clients never overlap');
    assertEqual(Object.keys(await t.serverObjects()), ['x'], 'pushed once');
    await until(() => two.events.change.some((c) => c.source === 'tab') || one.events.change.some((c) => c.source === 'tab'), 'a change heard from the other tab');
  } finally {
    one.stop();
    two.stop();
  }
}

export async function storeApiAndTransactions(ctx) {
  const store = await ctx.makeStore(unique('store-api'));
  assertEqual(await store.loadState(), undefined, 'no state at first');
  const put = await store.put('a', { v: 1 }, { type: 'note' });
  assertEqual([put.id, put.type, put.data, put.seq, put.pending], ['a', 'note', { v: 1 }, 0, true], 'put');
  await store.put('b', { v: 2 });
  assertEqual((await store.list({ type: 'note' })).map((r) => r.id), ['a'], 'list by type');
  assertEqual(await store.delete('b'), true, 'delete');
  assertEqual(await store.delete('nothing'), false, 'delete of nothing');
  assertEqual((await store.changes()).map((c) => [c.id, c.deleted ?? false]), [['a', false], ['b', true]], 'changes');
  const state = { client_id: 'c', collection_id: 'e1', cursor: 5, next_push_number: 1, in_flight: null, paging_horizon: null };
  // The second object cannot be stored (a function has no structured clone): nothing of the
  // call may land, not the first object and not the new cursor.
  const bad = [{ id: 'r1', type: '', seq: 4, data: { v: 1 } }, { id: 'r2', type: '', seq: 5, data: () => 1 }];
  await rejects(store.objectsReceived(bad, state), 'objectsReceived with an unstorable object');
  assertEqual(await store.get('r1'), undefined, 'the first object was rolled back');
  assertEqual(await store.loadState(), undefined, 'the cursor was rolled back');
  await store.objectsReceived([{ id: 'r1', type: '', seq: 4, data: { v: 1 } }], state);
  assertEqual([(await store.get('r1')).seq, (await store.loadState()).cursor], [4, 5], 'objects and cursor together');
}

// Where the host has EventSource (browsers): with `live`, another device's write reaches the
// store through the event stream, long before the 5-minute schedule would fetch it; and the
// client's own pushes do not ring for another sync.
export async function liveModeSyncsWhenAnotherDeviceWrites(ctx) {
  const t = setup(ctx, 'live');
  const store = await t.store();
  const a = t.client(store);
  a.start({ live: true });
  try {
    await until(() => a.events.status.some((s) => s.status === 'idle'), 'the first sync');
    await t.otherWrites('from-b', { v: 1 });
    await until(async () => (await store.get('from-b'))?.data?.v === 1, 'the live write in the store');
    await t.otherWrites('from-b', { v: 2 });
    await until(async () => (await store.get('from-b'))?.data?.v === 2, 'the second live write');
    await until(() => a.events.status.filter((s) => s.status === 'idle').length === 3, 'three cycles');
    // The client's own push: one cycle for the change, none for the echo of its own write.
    await store.put('mine', { v: 1 });
    a.notifyChanged();
    await until(async () => (await t.serverObjects()).mine !== undefined, 'the push');
    await until(() => a.events.status.filter((s) => s.status === 'idle').length === 4, 'the push cycle to end');
    await sleep(1000);
    assertEqual(a.events.status.filter((s) => s.status === 'syncing').length, 4, 'no sync for its own write');
  } finally {
    a.stop();
  }
}

// Blobs go up under their SHA-256 and come back checked against it: bytes that do not match
// (here corrupted on the way by an intercepting fetch) are refused with code `integrity`.
export async function blobsUploadAndVerifiedFetch(ctx) {
  const t = setup(ctx, 'blobs');
  const a = t.client(await t.store());
  const bytes = new TextEncoder().encode('tidemark blob '.repeat(100));
  const hash = await a.uploadBlob(bytes);
  assert(/^[0-9a-f]{64}$/.test(hash), `a sha256 hex hash (${hash})`);
  const back = await a.fetchBlob(hash);
  assertEqual(Array.from(back), Array.from(bytes), 'the bytes fetched');
  assertEqual(await a.uploadBlob(new Blob([bytes])), hash, 'the same hash from a Blob');

  const real = globalThis.fetch;
  globalThis.fetch = async (input, init) => {
    const response = await real(input, init);
    const corrupted = new Uint8Array(await response.arrayBuffer());
    corrupted[0] ^= 1;
    return new Response(corrupted, { status: response.status, headers: response.headers });
  };
  let error;
  try {
    error = await rejects(a.fetchBlob(hash), 'fetching corrupted bytes');
  } finally {
    globalThis.fetch = real;
  }
  assertEqual([error.name, error.code], ['SyncError', 'integrity'], 'the error');

  const missing = await rejects(a.fetchBlob('0'.repeat(64)), 'fetching an unknown blob');
  assertEqual([missing.code, missing.status], ['http', 404], 'an unknown blob');
}
