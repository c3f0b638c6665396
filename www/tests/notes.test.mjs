// The demo app end to end: two browser contexts as two devices of one user (or two users),
// the real sync-server, Chromium. Each test leaves screenshots of its windows in
// target/www-screenshots/<test>-<device>.png.

import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { Device } from './device.mjs';
import { APP, setUp } from './harness.mjs';

/** Per test; generous, since a server restart and backoff are in there. */
const TEST_TIMEOUT = { timeout: 60_000 };

let env;
let devices = [];

before(async () => {
  env = await setUp();
});

after(() => env?.tearDown());

afterEach(async (t) => {
  const label = t.name.replace(/[^a-z0-9]+/gi, '-').replace(/^-|-$/g, '').toLowerCase();
  for (const device of devices) {
    await device.screenshot(label);
    await device.close();
  }
  const errors = devices.flatMap((device) => device.errors.map((error) => `${device.name}: ${error}`));
  devices = [];
  assert.deepEqual(errors, [], 'uncaught errors in the page');
});

async function device(name, user) {
  const opened = await Device.open(env.browser, env.app.url, user, name);
  devices.push(opened);
  return opened;
}

test('an edit in one window appears in the other within 2 s, through live events', TEST_TIMEOUT, async () => {
  const a = await device('A', 'ada');
  const b = await device('B', 'ada');
  await a.newNote('Groceries', 'milk, bread');
  await b.waitTitles(['Groceries']);
  await b.openNote('Groceries');

  // B's own schedule would sync again in 5 minutes: only the live event can bring this in.
  await a.editTitle('Groceries for Sunday');
  await b.waitTitles(['Groceries for Sunday'], 2000);
  await b.waitEditor('Groceries for Sunday', 'milk, bread');
});

test('offline, three edits and a delete all arrive once when back online', TEST_TIMEOUT, async () => {
  const a = await device('A', 'grace');
  const b = await device('B', 'grace');
  await a.newNote('One', 'first');
  await a.newNote('Two', 'second');
  await a.newNote('Three', 'third');
  await a.waitSynced();
  await b.waitTitles(['One', 'Two', 'Three']);

  await a.setOffline(true);
  await a.newNote('Four', 'written offline');
  await a.openNote('One');
  await a.editTitle('One, edited offline');
  await a.openNote('Two');
  await a.editBody('second, edited offline');
  await a.openNote('Three');
  await a.deleteOpenNote();
  await a.waitState('offline', 4);
  assert.match(await a.statusText(), /Offline: This device is offline\. .*Next try by/);
  const waiting = (await a.page.locator('#waiting li').allTextContents()).sort();
  assert.deepEqual(waiting, ['Delete of “Three”', 'Edit of “One, edited offline”', 'Edit of “Two”', 'New note “Four”']);
  await a.screenshot('offline-edits-waiting');

  await a.setOffline(false);
  await a.waitSynced();
  await b.waitTitles(['One, edited offline', 'Two', 'Four']);
  await b.openNote('Two');
  await b.waitEditor('Two', 'second, edited offline');
  await b.openNote('Four');
  await b.waitEditor('Four', 'written offline');

  // On the server: each note once, and the deleted one as a single tombstone.
  const objects = await env.server.allNotes('grace');
  assert.equal(new Set(objects.map((o) => o.id)).size, objects.length);
  const live = objects.filter((o) => !o.deleted).map((o) => [o.data.title, o.data.body]);
  assert.deepEqual(live.sort(), [
    ['Four', 'written offline'],
    ['One, edited offline', 'first'],
    ['Two', 'second, edited offline'],
  ]);
  assert.equal(objects.filter((o) => o.deleted).length, 1);
});

test('edits of one note made apart are merged by the documented rule, the same in both windows', TEST_TIMEOUT, async () => {
  const a = await device('A', 'hopper');
  const b = await device('B', 'hopper');
  await a.newNote('Trip', 'Day one: museums');
  await b.waitTitles(['Trip']);
  await a.openNote('Trip');
  await b.openNote('Trip');

  // Apart: A retitles, then B retitles (later), then A rewrites the text (later still).
  await a.setOffline(true);
  await b.setOffline(true);
  await a.editTitle('Trip to Rome');
  await b.editTitle('Trip to Paris');
  await a.editBody('Day one: museums, then dinner');
  await a.waitState('offline', 1);
  await b.waitState('offline', 1);

  // A comes back first and pushes; B meets A's version and runs the resolver.
  await a.setOffline(false);
  await a.waitSynced();
  await b.setOffline(false);
  await b.waitSynced();

  // Last edit wins per field: B's title (edited after A's), A's text (edited after that).
  await b.waitEditor('Trip to Paris', 'Day one: museums, then dinner');
  await a.waitEditor('Trip to Paris', 'Day one: museums, then dinner');
  await a.waitTitles(['Trip to Paris']);
  const [notice] = await b.notices('conflict');
  assert.match(notice, /Conflict on “Trip to Paris”/);
  assert.match(notice, /Title: kept this device's edit; the other device's "Trip to Rome" was replaced\./);
  assert.match(notice, /Text: kept the other device's later edit; your "Day one: museums" was replaced\./);
  assert.equal((await b.stats()).conflicts, 1);
  assert.equal((await a.stats()).conflicts, 0);

  const [note] = await env.server.allNotes('hopper');
  assert.deepEqual([note.data.title, note.data.body], ['Trip to Paris', 'Day one: museums, then dinner']);
});

test('a delete reaches the other window as a tombstone', TEST_TIMEOUT, async () => {
  const a = await device('A', 'lovelace');
  const b = await device('B', 'lovelace');
  await a.newNote('Keep', 'this one stays');
  await a.newNote('Drop', 'this one goes');
  await b.waitTitles(['Keep', 'Drop']);
  await b.openNote('Drop');

  await a.openNote('Drop');
  await a.deleteOpenNote();
  assert.match((await a.notices('deleted'))[0], /Deleted “Drop”/);
  await a.waitSynced();

  await b.waitTitles(['Keep']);
  assert.match((await b.notices('deleted'))[0], /“Drop” was deleted on another device/);
  assert.equal(await b.page.isHidden('#editor'), true, 'the deleted note is closed');

  const objects = await env.server.allNotes('lovelace');
  const dropped = objects.filter((o) => o.deleted);
  assert.equal(dropped.length, 1);
  assert.equal(dropped[0].data, undefined, 'a tombstone carries no data');
  assert.deepEqual(
    objects.filter((o) => !o.deleted).map((o) => o.data.title),
    ['Keep'],
  );
});

test('a reload resumes from the stored cursor and pulls only what is new', TEST_TIMEOUT, async () => {
  const a = await device('A', 'turing');
  const b = await device('B', 'turing');
  const titles = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri'];
  for (const title of titles) await a.newNote(title, `plans for ${title}`);
  await a.waitSynced();
  await b.waitTitles(titles);

  // B's window goes away (its IndexedDB stays); A writes one more note meanwhile.
  await b.page.goto('about:blank');
  await a.newNote('Sat', 'plans for Sat');
  await a.waitSynced();

  await b.page.goto(env.app.url);
  await b.waitSynced();
  await b.waitTitles([...titles, 'Sat']);
  assert.equal((await b.stats()).pulled, 1, 'the reload pulls the one new note, not all six');

  // The count is real: a new device of the same user, with nothing stored, pulls all six.
  const c = await device('C', 'turing');
  await c.waitTitles([...titles, 'Sat']);
  assert.equal((await c.stats()).pulled, 6);
});

test('the app recovers by itself when the server restarts mid-session', TEST_TIMEOUT, async () => {
  const a = await device('A', 'knuth');
  const b = await device('B', 'knuth');
  await a.newNote('Before the restart', 'written while the server ran');
  await b.waitTitles(['Before the restart']);

  await env.server.kill();
  await a.editTitle('Written while the server was down');
  await a.waitState('offline', 1);
  assert.match(await a.statusText(), /The server cannot be reached\. .*Next try by \d\d:\d\d:\d\d/);
  await a.screenshot('server-down');

  await env.server.restart();
  // No click, no reload: the app's retry and the live stream's reconnection bring it back.
  await a.waitSynced();
  await b.waitTitles(['Written while the server was down']);
  await b.waitSynced();
  const [note] = await env.server.allNotes('knuth');
  assert.equal(note.data.title, 'Written while the server was down');
});

test("a second user cannot see the first user's notes", TEST_TIMEOUT, async () => {
  const alice = await device('alice', 'alice');
  await alice.newNote("Alice's secret", 'the combination is 1234');
  await alice.waitSynced();

  const bob = await device('bob', 'bob');
  await bob.waitTitles([]);
  await bob.newNote("Bob's list", 'eggs');
  await bob.waitSynced();

  // Alice syncs after Bob's push and still sees only her own note.
  const before = (await alice.stats()).syncs;
  await alice.page.click('#sync-now');
  await alice.until('a sync to finish', (before) => window.demo.stats.syncs > before, before);
  await alice.waitTitles(["Alice's secret"]);

  // Bob cannot read Alice's collection or its events: to him it does not exist.
  for (const path of [`/v1/data/${APP}/alice/notes?since=0`, `/v1/data/${APP}/alice/notes/events?access_token=bob`]) {
    const { status, body } = await env.server.request('bob', path);
    assert.equal(status, 404, path);
    assert.equal(body.error, 'not_found', path);
  }
  assert.deepEqual(
    (await env.server.allNotes('alice')).map((o) => o.data.title),
    ["Alice's secret"],
  );
});

test('an edit the server refuses shows the error and the next try, and stays until fixed', TEST_TIMEOUT, async () => {
  const a = await device('A', 'hamming');
  await a.newNote('Big', 'small');
  await a.waitSynced();

  // Over the server's --max-object-bytes (256 KiB): the push is refused with a 413.
  await a.editBody('x'.repeat(300 * 1024));
  await a.waitState('error', 1);
  assert.match(await a.statusText(), /^Sync error: the server answered 413: .+\. Next try by \d\d:\d\d:\d\d/);
  await a.screenshot('refused-edit');

  await a.editBody('small again');
  await a.waitSynced();
  const [note] = await env.server.allNotes('hamming');
  assert.equal(note.data.body, 'small again');
});
