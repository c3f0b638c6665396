// The demo's conflict rule (public/merge.js), without a browser: what `resolveConflict`
// returns for each case the README documents, and what the notice says.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { describeConflict, resolveNote } from '../public/merge.js';

const note = (title, titleAt, body, bodyAt) => ({ title, body, edited: { title: titleAt, body: bodyAt } });
const local = (data) => ({ id: 'n', type: 'note', baseSeq: 1, data });
const server = (data) => ({ id: 'n', type: 'note', seq: 2, data });

test('the later edit of each field wins, so both sides can contribute', () => {
  const mine = local(note('Trip to Paris', 20, 'Day one', 0));
  const theirs = server(note('Trip to Rome', 10, 'Day one, then dinner', 30));
  assert.deepEqual(resolveNote(mine, theirs), {
    data: note('Trip to Paris', 20, 'Day one, then dinner', 30),
  });
});

test('when every field is newer on one side, that side is returned as it is', () => {
  const mine = local(note('new', 20, 'new', 20));
  const theirs = server(note('old', 10, 'old', 10));
  assert.equal(resolveNote(mine, theirs), mine);
  assert.equal(resolveNote(local(note('old', 10, 'old', 10)), server(note('new', 20, 'new', 20))).seq, 2);
});

test('equal edit times keep the larger text on every device', () => {
  const a = note('apple', 5, 'x', 5);
  const b = note('banana', 5, 'x', 5);
  assert.equal(resolveNote(local(a), server(b)).data.title, 'banana');
  assert.equal(resolveNote(local(b), server(a)).data.title, 'banana');
});

test('an edit beats a delete, on either side', () => {
  const edited = server(note('kept', 1, '', 1));
  assert.equal(resolveNote({ id: 'n', type: 'note', baseSeq: 1, deleted: true }, edited), edited);
  const mine = local(note('kept', 1, '', 1));
  assert.equal(resolveNote(mine, null), mine);
  assert.equal(resolveNote(mine, { id: 'n', type: 'note', seq: 3, deleted: true }), mine);
});

test('the notice says, field by field, whose edit was kept and what was replaced', () => {
  const mine = local(note('Trip to Paris', 20, 'Day one', 0));
  const theirs = server(note('Trip to Rome', 10, 'Day one, then dinner', 30));
  const merged = { ...mine, ...resolveNote(mine, theirs) };
  assert.deepEqual(describeConflict({ local: mine, server: theirs, merged }), {
    title: 'Trip to Paris',
    lines: [
      `Title: kept this device's edit; the other device's "Trip to Rome" was replaced.`,
      `Text: kept the other device's later edit; your "Day one" was replaced.`,
    ],
  });
  // The server's version won whole: `merged` is null in the SDK's event.
  const lost = describeConflict({ local: local(note('a', 1, 'b', 1)), server: server(note('c', 2, 'b', 1)), merged: null });
  assert.deepEqual(lost.lines, [`Title: kept the other device's later edit; your "a" was replaced.`]);
});
