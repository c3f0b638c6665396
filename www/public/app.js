// Tidemark notes: a small collaborative notes app on the `tidemark` SDK.
//
// The notes live in IndexedDB (the SDK's IndexedDbStore), so the app works offline; the SDK's
// scheduler syncs them with the server, and the server's live events (live.js) ring for a
// sync as soon as another device writes. The page shows what a person needs to trust that:
// the sync status, the edits still waiting, conflicts with what was kept, and deletions.
//
// `window.demo` holds the page's sync totals, for the end-to-end tests and the curious.

import { SyncClient, IndexedDbStore } from 'tidemark/web';
import { describeConflict, resolveNote } from './merge.js';
import { followLive } from './live.js';
import { StatusLine } from './status.js';

const USER_KEY = 'tidemark-demo:user';
const COLLECTION = 'notes';
const TYPE = 'note';
/** Older notices are dropped past this many. */
const MAX_NOTICES = 6;

const $ = (id) => document.getElementById(id);

const demo = {
  user: null,
  /** Totals since this page loaded: completed syncs, notes pulled and pushed, conflicts. */
  stats: { syncs: 0, pulled: 0, pushed: 0, conflicts: 0 },
  /** Local writes (creates, edits, deletes) stored in IndexedDB since this page loaded. */
  writes: 0,
};
window.demo = demo;

function showSignIn() {
  $('sign-in').hidden = false;
  $('sign-in').addEventListener('submit', (event) => {
    event.preventDefault();
    localStorage.setItem(USER_KEY, $('user').value.trim());
    location.reload();
  });
}

async function openNotes(user) {
  demo.user = user;
  $('whoami').textContent = user;
  $('account').hidden = false;
  $('app').hidden = false;
  $('sign-out').addEventListener('click', () => {
    localStorage.removeItem(USER_KEY);
    location.reload();
  });

  // One database per server, app and user: switching users on one browser mixes nothing.
  const store = await IndexedDbStore.open(`tidemark-demo:${config.server}:${config.app}:${user}`);
  // Dev auth (the server's default on loopback): the bearer token is the user id.
  const client = new SyncClient({
    url: config.server,
    app: config.app,
    collection: COLLECTION,
    token: user,
    store,
    resolveConflict: resolveNote,
  });
  const status = new StatusLine($('status'));
  const ui = new NotesUi(store, client);
  const live = liveSync({ user, store, client, status, ui });

  client.on('status', ({ status: state }) => {
    if (state === 'syncing') status.syncing();
    if (state === 'idle') {
      status.synced();
      demo.stats.syncs += 1;
      live.syncIfBehind();
    }
    renderStats();
    ui.refresh();
  });
  client.on('progress', (progress) => status.progress(progress));
  client.on('error', (error) => status.failed(error));
  client.on('conflict', (conflict) => {
    demo.stats.conflicts += 1;
    ui.conflict(conflict);
  });
  client.on('change', (change) => {
    if (change.source === 'sync') {
      demo.stats.pulled += change.pulled;
      demo.stats.pushed += change.pushed;
      renderStats();
    }
    ui.refresh();
  });
  $('sync-now').addEventListener('click', () => client.syncNow().catch(() => {}));

  ui.refresh();
  client.start();
}

function renderStats() {
  const { syncs, pulled, pushed, conflicts } = demo.stats;
  const count = (n, one, many) => `${n} ${n === 1 ? one : many}`;
  $('stats').textContent =
    `Since this page loaded: ${count(syncs, 'sync', 'syncs')}, ${count(pulled, 'note', 'notes')} received, ` +
    `${pushed} sent, ${count(conflicts, 'conflict', 'conflicts')}.`;
}

/**
 * Syncs when the live stream announces a change the store has not seen. While a sync runs,
 * the announcement waits for its end (`syncIfBehind` after each sync), so that a device's own
 * pushes, echoed by the stream, cost no extra sync.
 */
function liveSync({ user, store, client, status, ui }) {
  let announced = 0;
  const cursor = async () => (await store.loadState())?.cursor ?? 0;
  const sync = () => client.syncNow().catch(() => {}); // failures show through the `error` event
  const syncIfBehind = async () => {
    if (status.state !== 'syncing' && announced > (await cursor())) sync();
  };
  followLive({
    url: `${config.server}/v1/data/${config.app}/~/${COLLECTION}/events?access_token=${encodeURIComponent(user)}`,
    cursor,
    ring: (seq) => {
      if (seq === null) return sync(); // a reset: the SDK starts over
      announced = Math.max(announced, seq);
      syncIfBehind();
    },
    // The stream is back, so the server is too: retry now rather than at the backoff's time.
    connected: () => {
      if (status.state === 'offline' || status.state === 'error' || ui.waiting > 0) sync();
    },
  });
  return { syncIfBehind };
}

/** The notes list, the editor, the waiting edits and the notices. */
class NotesUi {
  constructor(store, client) {
    this.store = store;
    this.client = client;
    /** The live notes last read from the store, by id. */
    this.notes = new Map();
    /** The last title seen of every note, to name deleted ones. */
    this.titles = new Map();
    /** Notes deleted on this device (the others' deletions get a notice). */
    this.deletedHere = new Set();
    this.openId = null;
    this.waiting = 0;
    /** Keystrokes not yet stored: the editor must not paint the store's older text over them. */
    this.unsaved = 0;
    // Store reads and writes run one at a time, in order, so that a read started before an
    // edit never paints over it.
    this.queue = Promise.resolve();

    $('new-note').addEventListener('click', () => this.serial(() => this.create()));
    $('delete').addEventListener('click', () => this.serial(() => this.remove(this.openId)));
    for (const field of ['title', 'body']) {
      $(field).addEventListener('input', (event) => {
        // The text as typed now: by the time the edit runs, a render may have changed the field.
        const value = event.target.value;
        this.unsaved += 1;
        this.serial(() => this.edit(field, value)).finally(() => (this.unsaved -= 1));
      });
    }
    $('notes').addEventListener('click', (event) => {
      const item = event.target.closest('li[data-id]');
      if (!item) return;
      this.openId = item.dataset.id;
      this.serial(() => this.load());
    });
  }

  // A local write is stored: let the SDK know, and count it.
  wrote() {
    demo.writes += 1;
    this.client.notifyChanged();
  }

  serial(task) {
    this.queue = this.queue.then(task).catch((error) => console.error('tidemark demo:', error));
    return this.queue;
  }

  refresh() {
    return this.serial(() => this.load());
  }

  // --- edits --------------------------------------------------------------------------

  async create() {
    const id = crypto.randomUUID();
    const now = Date.now();
    await this.store.put(id, { title: '', body: '', edited: { title: now, body: now } }, { type: TYPE });
    this.wrote();
    this.openId = id;
    await this.load();
    $('title').focus();
  }

  // One field changed: the rest of the note comes from the store, never from the screen.
  async edit(field, value) {
    const id = this.openId;
    const record = await this.store.get(id);
    if (!record) return;
    const data = { ...record.data, [field]: value, edited: { ...record.data.edited, [field]: Date.now() } };
    await this.store.put(id, data, { type: TYPE });
    this.wrote();
    await this.load();
  }

  async remove(id) {
    const record = await this.store.get(id);
    if (!record) return;
    this.deletedHere.add(id);
    await this.store.delete(id);
    this.wrote();
    this.openId = null;
    const title = record.data.title || 'Untitled';
    this.notice('deleted', `Deleted “${title}”`, ['Your other devices drop it at their next sync.'], {
      label: 'Undo',
      run: () => this.serial(() => this.restore(id, record.data)),
    });
    await this.load();
  }

  async restore(id, data) {
    this.deletedHere.delete(id);
    await this.store.put(id, data, { type: TYPE });
    this.wrote();
    this.openId = id;
    await this.load();
  }

  // --- what the store holds, on screen ------------------------------------------------

  async load() {
    const records = await this.store.list({ type: TYPE });
    const changes = await this.store.changes();
    const live = new Map(records.map((record) => [record.id, record]));
    for (const [id, old] of this.notes) {
      if (!live.has(id) && !this.deletedHere.has(id)) {
        const title = old.data.title || 'Untitled';
        this.notice('deleted', `“${title}” was deleted on another device`, []);
      }
    }
    this.notes = live;
    for (const record of records) this.titles.set(record.id, record.data.title);
    if (this.openId && !live.has(this.openId)) this.openId = null;
    this.renderList();
    this.renderEditor();
    this.renderWaiting(changes);
  }

  renderList() {
    const lastEdit = (record) => Math.max(record.data.edited?.title ?? 0, record.data.edited?.body ?? 0);
    const sorted = [...this.notes.values()].sort((a, b) => lastEdit(b) - lastEdit(a));
    $('notes').replaceChildren(
      ...sorted.map((record) => {
        const item = document.createElement('li');
        item.dataset.id = record.id;
        item.textContent = record.data.title || 'Untitled';
        item.classList.toggle('pending', record.pending);
        item.setAttribute('aria-current', String(record.id === this.openId));
        return item;
      }),
    );
    $('empty').hidden = sorted.length > 0;
  }

  renderEditor() {
    const record = this.notes.get(this.openId);
    $('editor').hidden = !record;
    if (!record) return;
    $('editor').dataset.id = record.id;
    for (const field of ['title', 'body']) {
      const input = $(field);
      const value = record.data[field] ?? '';
      // A field being typed into keeps its text (and caret) while its edit is still local or
      // not even stored; anything else shows the store, including another device's edit.
      const typing = document.activeElement === input && (record.pending || this.unsaved > 0);
      if (input.value !== value && !typing) input.value = value;
    }
  }

  renderWaiting(changes) {
    this.waiting = changes.length;
    const pending = $('pending');
    pending.dataset.count = String(changes.length);
    pending.textContent =
      changes.length === 0
        ? 'All edits are synced.'
        : `${changes.length} ${changes.length === 1 ? 'edit' : 'edits'} waiting to sync.`;
    $('waiting').replaceChildren(
      ...changes.map((change) => {
        const title = (change.deleted ? this.titles.get(change.id) : change.data?.title) || 'Untitled';
        const item = document.createElement('li');
        item.dataset.id = change.id;
        item.textContent = change.deleted
          ? `Delete of “${title}”`
          : change.baseSeq === 0
            ? `New note “${title}”`
            : `Edit of “${title}”`;
        return item;
      }),
    );
  }

  // --- notices ------------------------------------------------------------------------

  conflict(event) {
    const { title, lines } = describeConflict(event);
    this.notice('conflict', `Conflict on “${title}”: both devices changed it while apart`, lines);
  }

  notice(kind, heading, lines, action) {
    const box = document.createElement('div');
    box.className = `notice ${kind}`;
    const close = document.createElement('button');
    close.type = 'button';
    close.textContent = 'Dismiss';
    close.addEventListener('click', () => box.remove());
    box.append(close);
    if (action) {
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = action.label;
      button.addEventListener('click', () => {
        box.remove();
        action.run();
      });
      box.append(button);
    }
    const strong = document.createElement('strong');
    strong.textContent = heading;
    box.append(strong);
    for (const line of lines) {
      const p = document.createElement('p');
      p.textContent = line;
      box.append(p);
    }
    const notices = $('notices');
    notices.prepend(box);
    while (notices.children.length > MAX_NOTICES) notices.lastElementChild.remove();
  }
}

// Last, once every class above is defined.
const config = await (await fetch('/config.json')).json();
const signedIn = localStorage.getItem(USER_KEY);
if (signedIn) {
  await openNotes(signedIn);
} else {
  showSignIn();
}
