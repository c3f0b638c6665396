// One device of a user: a browser context of its own (its own IndexedDB, localStorage and
// network switch) with the demo app open, driven the way a person would use it.

import { join } from 'node:path';
import { PATIENCE_MS, SCREENSHOTS } from './harness.mjs';

export class Device {
  /** Opens the app in a new context of `browser` and signs in as `user`. */
  static async open(browser, appUrl, user, name) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const device = new Device(name, context, page, appUrl);
    page.on('pageerror', (error) => device.errors.push(error));
    await page.goto(appUrl);
    await page.fill('#user', user);
    await page.click('#sign-in button[type=submit]');
    await device.waitSynced();
    return device;
  }

  constructor(name, context, page, appUrl) {
    this.name = name;
    this.context = context;
    this.page = page;
    this.appUrl = appUrl;
    /** Uncaught errors in the page; a test that ends with any fails. */
    this.errors = [];
  }

  // --- waiting --------------------------------------------------------------------------

  /**
   * Waits until `predicate(arg)`, run in the page, is true; on timeout, fails with `what` and
   * what the page shows (status line, waiting edits, notes), which is what a person would look at.
   */
  async until(what, predicate, arg, timeout = PATIENCE_MS) {
    try {
      await this.page.waitForFunction(predicate, arg, { timeout, polling: 50 });
    } catch (error) {
      const seen = await this.page
        .evaluate(() => ({
          status: document.getElementById('status').textContent,
          pending: document.getElementById('pending').textContent,
          notes: [...document.querySelectorAll('#notes li')].map((li) => li.textContent),
        }))
        .catch(() => 'the page could not be read');
      throw new Error(`${this.name}: ${what} (${error.message.split('\n')[0]}); the page shows ${JSON.stringify(seen)}`);
    }
  }

  /** Status "synced" with no edit waiting. */
  waitSynced(timeout) {
    return this.until(
      'synced with nothing waiting',
      () =>
        document.getElementById('status').dataset.state === 'synced' &&
        document.getElementById('pending').dataset.count === '0',
      undefined,
      timeout,
    );
  }

  waitState(state, pending) {
    return this.until(
      `status ${state} with ${pending} edits waiting`,
      ([state, pending]) =>
        document.getElementById('status').dataset.state === state &&
        document.getElementById('pending').dataset.count === String(pending),
      [state, pending],
    );
  }

  /** The notes list shows exactly `titles` (in any order). */
  waitTitles(titles, timeout) {
    const want = [...titles].sort();
    return this.until(
      `the notes list to be ${JSON.stringify(want)}`,
      (want) => {
        const have = [...document.querySelectorAll('#notes li')].map((li) => li.textContent).sort();
        return JSON.stringify(have) === JSON.stringify(want);
      },
      want,
      timeout,
    );
  }

  /** The open note's editor shows `title` and `body`. */
  waitEditor(title, body) {
    return this.until(
      `the editor to show ${JSON.stringify({ title, body })}`,
      ([title, body]) =>
        !document.getElementById('editor').hidden &&
        document.getElementById('title').value === title &&
        document.getElementById('body').value === body,
      [title, body],
    );
  }

  // --- doing --------------------------------------------------------------------------

  // Runs `action` and waits until the app has stored the write it makes in IndexedDB.
  async write(action) {
    const before = await this.page.evaluate(() => window.demo.writes);
    await action();
    await this.until('the edit to be stored', (before) => window.demo.writes > before, before);
  }

  async newNote(title, body = '') {
    await this.write(() => this.page.click('#new-note'));
    await this.until(
      'the new note to open',
      () => document.activeElement.id === 'title' && document.activeElement.value === '',
    );
    await this.editTitle(title);
    if (body) await this.editBody(body);
  }

  async openNote(title) {
    await this.page.locator('#notes li').filter({ hasText: new RegExp(`^${escape(title)}$`) }).click();
    await this.until(`note ${title} to open`, (title) => document.getElementById('title').value === title, title);
  }

  editTitle(text) {
    return this.write(() => this.page.fill('#title', text));
  }

  editBody(text) {
    return this.write(() => this.page.fill('#body', text));
  }

  deleteOpenNote() {
    return this.write(() => this.page.click('#delete'));
  }

  setOffline(offline) {
    return this.context.setOffline(offline);
  }

  // --- reading ------------------------------------------------------------------------

  stats() {
    return this.page.evaluate(() => ({ ...window.demo.stats }));
  }

  notices(kind) {
    return this.page.locator(`#notices .notice.${kind}`).allTextContents();
  }

  statusText() {
    return this.page.textContent('#status');
  }

  async screenshot(label) {
    await this.page.screenshot({ path: join(SCREENSHOTS, `${label}-${this.name}.png`), fullPage: true });
  }

  close() {
    return this.context.close();
  }
}

const escape = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
