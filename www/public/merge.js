// The demo's conflict rule, as a pure function so that Node can test it without a browser.
//
// A note is `{title, body, edited: {title, body}}`, where `edited.<field>` is the time (ms,
// the editing device's clock) of the last edit of that field. When a local edit meets a newer
// server version of the same note (both devices changed it while apart), the SDK calls
// `resolveConflict(local, server)` and pushes what it returns:
//
// - **Last edit wins, field by field.** For the title and the body separately, the version
//   edited later is kept. So one device's new title and the other's new body both survive.
//   Equal times (rare) keep the larger text, so that every device picks the same one.
// - **An edit beats a delete.** A note edited on one device and deleted on the other is kept,
//   with the edit: a conflict never loses text silently.

/** The fields merged one by one. */
export const FIELDS = ['title', 'body'];

/** The labels the conflict notice uses. */
const LABELS = { title: 'Title', body: 'Text' };

const editedAt = (data, field) => data?.edited?.[field] ?? 0;
const textOf = (data, field) => data?.[field] ?? '';

// True when `mine` should win over `theirs` for `field`.
function newer(mine, theirs, field) {
  const a = editedAt(mine, field);
  const b = editedAt(theirs, field);
  if (a !== b) return a > b;
  return textOf(mine, field) > textOf(theirs, field);
}

/**
 * The merge of a local note and the server's: the SDK's `resolveConflict`. Returns `local`,
 * `server`, or `{data}` (a merge of both), as the SDK expects.
 */
export function resolveNote(local, server) {
  const serverLive = server && !server.deleted;
  if (!serverLive) return local; // deleted elsewhere: the local edit (or delete) stands
  if (local.deleted) return server; // edited elsewhere: the edit beats this delete
  const fromLocal = FIELDS.filter((field) => newer(local.data, server.data, field));
  if (fromLocal.length === FIELDS.length) return local;
  if (fromLocal.length === 0) return server;
  const data = { edited: {} };
  for (const field of FIELDS) {
    const winner = fromLocal.includes(field) ? local.data : server.data;
    data[field] = textOf(winner, field);
    data.edited[field] = editedAt(winner, field);
  }
  return { data };
}

/**
 * What the SDK's `conflict` event means for a person: a title and one line per field that
 * says whose edit was kept, and the text that was replaced.
 */
export function describeConflict({ local, server, merged }) {
  const title = textOf(merged?.data ?? server?.data ?? local.data, 'title') || 'Untitled';
  if (local.deleted) {
    return {
      title,
      lines: ['You deleted this note, but another device edited it: the note was kept, with that edit.'],
    };
  }
  if (!server || server.deleted) {
    return {
      title,
      lines: ['Another device deleted this note while you edited it: your edit was kept.'],
    };
  }
  const kept = merged?.data ?? server.data; // `merged` is null when the server's version won
  const lines = [];
  for (const field of FIELDS) {
    const mine = textOf(local.data, field);
    const theirs = textOf(server.data, field);
    if (mine === theirs) continue;
    const label = LABELS[field];
    if (textOf(kept, field) === mine) {
      lines.push(`${label}: kept this device's edit; the other device's "${theirs}" was replaced.`);
    } else {
      lines.push(`${label}: kept the other device's later edit; your "${mine}" was replaced.`);
    }
  }
  if (lines.length === 0) lines.push('Both devices made the same change.');
  return { title, lines };
}
