// The SDK in Node (the package's nodejs build, with MemoryStore) against a real sync-server:
// the same scenarios as in the browser. Run by scripts/test-sdk.sh, which starts the server
// and sets TIDEMARK_TEST_ENV.
import { test } from 'node:test';
import { MemoryStore, SyncClient } from '../../pkg/node.js';
import * as scenarios from '../scenarios.js';

const env = JSON.parse(process.env.TIDEMARK_TEST_ENV ?? 'null');
if (!env) throw new Error('TIDEMARK_TEST_ENV is not set: run scripts/test-sdk.sh');

const ctx = {
  env,
  makeClient: (options) => new SyncClient(options),
  makeStore: async () => new MemoryStore(),
};

// Web Locks and EventSource are browser APIs (Node 20 has neither); the browser suite runs
// those.
const browserOnly = new Set(['tabsTakeTurnsAndHearEachOther', 'liveModeSyncsWhenAnotherDeviceWrites']);

for (const [name, scenario] of Object.entries(scenarios)) {
  if (browserOnly.has(name)) continue;
  test(name, () => scenario(ctx));
}

test('options are checked when the client is made', () => {
  const store = new MemoryStore();
  const base = { url: env.url, app: env.app, collection: 'c', token: 't', store };
  for (const [bad, what] of [
    [{ app: 'Bad App' }, 'options.app'],
    [{ collection: '..' }, 'options.collection'],
    [{ token: 42 }, 'options.token'],
    [{ store: { ...store, conflictResolved: undefined, loadState: () => null } }, 'options.store.saveState'],
  ]) {
    let error;
    try {
      new SyncClient({ ...base, ...bad });
    } catch (e) {
      error = e;
    }
    if (!(error instanceof TypeError) || !error.message.includes(what)) {
      throw new Error(`expected a TypeError naming ${what}, got ${error}`);
    }
  }
  new SyncClient(base).free();
});
