// What the browser tests run against: the real sync-server binary on loopback, the demo app
// on another origin (so CORS is real), and Debian's Chromium driven by playwright-core.
//
// - TIDEMARK_SERVER_BIN: the server binary (default: $CARGO_TARGET_DIR or target/, then
//   debug/sync-server). Missing → the tests fail: they are not optional.
// - TIDEMARK_TEST_BACKEND=postgres: the server keeps its data in a fresh schema of
//   TIDEMARK_TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test), dropped at
//   the end, as in the Rust end-to-end tests; otherwise SQLite in a temporary directory.
// - CHROMIUM: the browser (default /usr/bin/chromium).
// - Screenshots go to target/www-screenshots/ (or TIDEMARK_SCREENSHOTS).

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startAppServer } from '../serve.mjs';

const root = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const targetDir = resolve(root, process.env.CARGO_TARGET_DIR ?? 'target');

/** Where each test's screenshots go, for a person to look at. */
export const SCREENSHOTS = resolve(root, process.env.TIDEMARK_SCREENSHOTS ?? 'target/www-screenshots');

/** The app name the demo syncs under. */
export const APP = 'notes-demo';

/** How long a condition may take before a wait fails (network waits, backoff, restarts). */
export const PATIENCE_MS = 20_000;

/** The sync-server process, restartable on the same port with the same data. */
export class SyncServer {
  /** Starts a server that accepts browser requests from `origin`. */
  static async start(origin) {
    const bin = process.env.TIDEMARK_SERVER_BIN ?? join(targetDir, 'debug', 'sync-server');
    if (!existsSync(bin)) {
      throw new Error(`${bin} is missing: build it with \`cargo build -p sync-server\``);
    }
    const server = new SyncServer(bin, origin);
    await server.spawn('127.0.0.1:0');
    return server;
  }

  constructor(bin, origin) {
    this.bin = bin;
    this.origin = origin;
    this.dir = mkdtempSync(join(tmpdir(), 'tidemark-www-'));
    this.storage = ['--data', join(this.dir, 'data')];
    const backend = process.env.TIDEMARK_TEST_BACKEND ?? 'sqlite';
    if (backend === 'postgres' || backend === 'postgresql') {
      this.database = process.env.TIDEMARK_TEST_DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test';
      this.schema = `www_${process.pid}_${Date.now()}`;
      this.storage = ['--database', this.database, '--database-schema', this.schema];
    } else if (backend !== 'sqlite' && backend !== '') {
      throw new Error(`TIDEMARK_TEST_BACKEND=${backend}: expected sqlite or postgres`);
    }
    this.starts = 0;
  }

  async spawn(listen) {
    this.starts += 1;
    const args = ['--listen', listen, ...this.storage, '--cors-origin', this.origin];
    const child = spawn(this.bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.log = '';
    child.stderr.on('data', (chunk) => {
      this.log += chunk;
    });
    this.url = await new Promise((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => fail('did not print its address in 20 s'), PATIENCE_MS);
      const fail = (why) => {
        clearTimeout(timer);
        child.kill('SIGKILL');
        reject(new Error(`sync-server ${why}\n${this.log}`));
      };
      child.once('exit', (code) => fail(`exited with ${code}`));
      child.stdout.on('data', (chunk) => {
        out += chunk;
        const found = /tidemark listening on (http\S+)/.exec(out);
        if (found) {
          clearTimeout(timer);
          child.removeAllListeners('exit');
          resolve(found[1]);
        }
      });
    });
  }

  /** SIGKILL: no goodbye to open streams, as in a crash. */
  async kill() {
    const child = this.child;
    this.child = null;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }

  /** Starts again on the same port, with the same data. */
  async restart() {
    await this.kill();
    await this.spawn(new URL(this.url).host);
  }

  async stop() {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
    if (this.schema) {
      const dropped = spawnSync('psql', [this.database, '-qc', `DROP SCHEMA IF EXISTS ${this.schema} CASCADE`]);
      if (dropped.status !== 0) console.error(`could not drop ${this.schema}: ${dropped.stderr}`);
    }
  }

  /** A request to the server as `user` (dev auth: the token is the user id). */
  async request(user, path, init = {}) {
    const res = await fetch(`${this.url}${path}`, {
      ...init,
      headers: { authorization: `Bearer ${user}`, ...init.headers },
    });
    return { status: res.status, body: await res.json() };
  }

  /** Every object of `owner`'s notes, tombstones included, as a pull from 0 shows them. */
  async allNotes(owner) {
    const { status, body } = await this.request(owner, `/v1/data/${APP}/${owner}/notes?since=0`);
    if (status !== 200) throw new Error(`pull answered ${status}: ${JSON.stringify(body)}`);
    return body.objects;
  }
}

/** Everything a test file needs: the servers, the browser, and devices to open. */
export async function setUp() {
  const config = { app: APP, server: null };
  const app = await startAppServer({ config });
  const server = await SyncServer.start(app.url);
  config.server = server.url;
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox'],
  });
  mkdirSync(SCREENSHOTS, { recursive: true });
  return {
    app,
    server,
    browser,
    async tearDown() {
      await browser.close();
      await server.stop();
      await app.close();
    },
  };
}
