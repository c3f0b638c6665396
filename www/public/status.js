// The sync status line: what the SDK's `status`, `progress` and `error` events mean for a
// person, as a state (`synced`, `syncing`, `offline`, `error`) and a sentence.
//
// The SDK does not say when its scheduler will try again after a failure, only how it
// decides (sync-wasm/README.md): 2 s after the first failure, then 4 s, 8 s … up to 5 minutes,
// each with jitter between half and all of it, and never before a `Retry-After`. So the
// latest time of the next try is known, and that is what the line shows ("next try by").
// The app's own triggers (the live stream reconnecting, the network coming back) can make
// it sooner.

const BACKOFF_BASE_MS = 2000;
const BACKOFF_MAX_MS = 5 * 60 * 1000;

/** The latest time (ms) of the next try after `failures` failed syncs in a row. */
export function nextTryBy(now, failures, retryAfterMs = 0) {
  const backoff = Math.min(BACKOFF_BASE_MS * 2 ** Math.max(0, failures - 1), BACKOFF_MAX_MS);
  return now + Math.max(backoff, retryAfterMs);
}

const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });

/** What the SDK's `SyncError` says, in a few words. */
function reason(error) {
  switch (error.code) {
    case 'unauthorized':
      return 'the server refused the sign-in';
    case 'http':
      return `the server answered ${error.status}${error.body?.message ? `: ${error.body.message}` : ''}`;
    case 'contention':
      return 'other devices kept writing first; your edits stay saved here';
    default:
      return error.message;
  }
}

/** Keeps the state and renders it into `element` (its text and `data-state`). */
export class StatusLine {
  constructor(element) {
    this.element = element;
    this.state = 'syncing';
    this.text = 'Connecting…';
    this.failures = 0;
    this.retryBy = null;
    this.lastSynced = null;
    // The countdown of "next try by" moves every second.
    setInterval(() => this.retryBy && this.render(), 1000);
  }

  syncing() {
    this.set('syncing', 'Syncing…');
  }

  progress({ loaded, total, pulled }) {
    const of = total > 0 ? ` ${loaded} of ${total} changes` : '';
    this.set('syncing', `Syncing…${of} (${pulled} notes received)`);
  }

  synced() {
    this.failures = 0;
    this.retryBy = null;
    this.lastSynced = Date.now();
    this.set('synced', `Synced at ${clock(this.lastSynced)}`);
  }

  failed(error) {
    this.failures += 1;
    this.retryBy = nextTryBy(Date.now(), this.failures, error.retryAfter);
    if (error.code === 'network') {
      const where = navigator.onLine ? 'The server cannot be reached' : 'This device is offline';
      this.set('offline', `Offline: ${where}. Edits are kept here.`);
    } else {
      this.set('error', `Sync error: ${reason(error)}.`);
    }
  }

  set(state, text) {
    this.state = state;
    this.text = text;
    if (state === 'syncing' || state === 'synced') this.retryBy = null;
    this.render();
  }

  render() {
    let text = this.text;
    if (this.retryBy) {
      const seconds = Math.max(0, Math.ceil((this.retryBy - Date.now()) / 1000));
      text += ` Next try by ${clock(this.retryBy)} (in ${seconds} s).`;
    }
    this.element.dataset.state = this.state;
    this.element.textContent = text;
  }
}
