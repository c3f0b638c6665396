// Live updates: the server's event stream of the collection, used only as a doorbell.
//
// The SDK has no live mode yet: it syncs on its own schedule (every 5 minutes, after local
// edits, when the network comes back). So the app listens to
// `GET /v1/data/{app}/{owner}/{collection}/events` and asks for a sync when a change newer
// than the stored cursor is announced. The objects themselves still come through the SDK's
// pull, into the store, so the cursor and the data never part ways.
//
// EventSource cannot send an Authorization header: the token goes in `?access_token=`, which
// the server accepts on this route only (see docs/PROTOCOL.md).

/** How long to wait before reopening a stream the browser gave up on (an HTTP error). */
const REOPEN_MS = 3000;

/**
 * Follows the collection's events. `cursor()` resolves to the seq the store has reached;
 * `ring(seq)` is called for a change past it (or `null` for a reset), and `connected()` each
 * time the stream (re)opens, since changes made while it was down are not replayed to the app.
 * Returns `close()`.
 */
export function followLive({ url, cursor, ring, connected }) {
  let source = null;
  let reopenTimer = null;
  let closed = false;

  const open = async () => {
    const since = await cursor();
    if (closed) return;
    source = new EventSource(`${url}${url.includes('?') ? '&' : '?'}since=${since}`);
    source.addEventListener('open', () => connected());
    source.addEventListener('change', (event) => ring(Number(event.lastEventId)));
    source.addEventListener('reset', () => ring(null));
    source.addEventListener('error', () => {
      // A dropped connection is retried by the browser (with Last-Event-ID); an HTTP error
      // (for example a 410 for a cursor below the horizon, or a 503) closes the stream for
      // good, so open a new one from the cursor the store has now.
      if (source.readyState === EventSource.CLOSED && !closed) {
        source = null;
        reopenTimer = setTimeout(open, REOPEN_MS);
      }
    });
  };
  open();

  return function close() {
    closed = true;
    clearTimeout(reopenTimer);
    source?.close();
  };
}
