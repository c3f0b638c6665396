// The driver of scripts/bench-idb.sh (read that first): loads the records into Tidemark,
// serves the page (index.html, pull.js, both SDKs) and runs it in headless Chromium, each
// repetition in a fresh browser profile, alternating the two SDKs. Prints one JSON line per
// pull and writes them all to --out. Times nothing itself: the page does.
//
//   node www/bench/run.mjs --listen 127.0.0.1:PORT --records FILE --count N --reps R \
//     --tidemark URL --kinto URL --kinto-js DIR --out FILE
//
// Fails (exit 1) if a pull stores any other number of records than --count.

import http from 'node:http';
import { createReadStream, realpathSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';
import sirv from 'sirv';

const here = fileURLToPath(new URL('.', import.meta.url));

const { values: opt } = parseArgs({
  options: {
    listen: { type: 'string' },
    records: { type: 'string' },
    count: { type: 'string' },
    reps: { type: 'string', default: '3' },
    tidemark: { type: 'string' },
    kinto: { type: 'string' },
    'kinto-js': { type: 'string' },
    'pull-limit': { type: 'string', default: '10000' },
    systems: { type: 'string', default: 'tidemark,kinto' },
    out: { type: 'string' },
  },
});
for (const name of ['listen', 'records', 'count', 'tidemark', 'out']) {
  if (!opt[name]) throw new Error(`--${name} is required`);
}
const COUNT = Number(opt.count);
const systems = opt.systems.split(',');
if (systems.includes('kinto') && !(opt.kinto && opt['kinto-js'])) {
  throw new Error('--kinto and --kinto-js are required for kinto');
}

// Who syncs what. Tidemark: dev auth (the token is the user id) on loopback; Kinto: basicauth,
// whose user is whatever the credentials hash to.
const TIDEMARK = { app: 'bench', collection: 'idb', token: 'bench', pullLimit: Number(opt['pull-limit']) };
const KINTO = { bucket: 'bench', collection: 'idb', authorization: `Basic ${btoa('bench:bench')}` };

async function records() {
  const out = [];
  const lines = createInterface({ input: createReadStream(opt.records), crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line) continue;
    const tab = line.indexOf('\t');
    out.push({ id: line.slice(0, tab), data: JSON.parse(line.slice(tab + 1)) });
  }
  return out;
}

async function call(url, init) {
  const res = await fetch(url, init);
  const text = await res.text();
  if (!res.ok) throw new Error(`${init?.method ?? 'GET'} ${url}: ${res.status} ${text.slice(0, 300)}`);
  return text ? JSON.parse(text) : undefined;
}

// Tidemark: batches of 1,000 (the server's --max-batch), 4 at a time, through the push API.
async function loadTidemark(objects) {
  const url = `${opt.tidemark}/v1/data/${TIDEMARK.app}/~/${TIDEMARK.collection}`;
  const headers = { authorization: `Bearer ${TIDEMARK.token}`, 'content-type': 'application/json' };
  const batches = [];
  for (let i = 0; i < objects.length; i += 1000) batches.push(objects.slice(i, i + 1000));
  const worker = async () => {
    for (let batch; (batch = batches.shift()); ) {
      await call(url, { method: 'POST', headers, body: JSON.stringify({ objects: batch }) });
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
}

// Kinto: the records are already in its storage (bench_kinto.py preloads them when the server
// starts); the bucket and the collection objects are created here, through the API, as the
// benchmark of scripts/bench.sh does.
async function prepareKinto() {
  const headers = { authorization: KINTO.authorization, 'content-type': 'application/json' };
  const put = (path) => call(`${opt.kinto}/v1${path}`, { method: 'PUT', headers, body: '{"data": {}}' });
  await put(`/buckets/${KINTO.bucket}`);
  await put(`/buckets/${KINTO.bucket}/collections/${KINTO.collection}`);
  const res = await fetch(`${opt.kinto}/v1/buckets/${KINTO.bucket}/collections/${KINTO.collection}/records?_limit=1`, {
    method: 'HEAD',
    headers,
  });
  const total = Number(res.headers.get('total-objects') ?? res.headers.get('total-records'));
  if (total !== COUNT) throw new Error(`Kinto holds ${total} records, expected ${COUNT}`);
}

// The page, both SDKs, nothing else.
async function servePage() {
  const page = sirv(here, { dev: true });
  const tidemark = sirv(realpathSync(join(here, '..', 'node_modules', 'tidemark')), { dev: true });
  const kinto = opt['kinto-js'] ? sirv(opt['kinto-js'], { dev: true }) : null;
  const notFound = (res) => res.writeHead(404).end('not found');
  const server = http.createServer((req, res) => {
    for (const [prefix, files] of [['/vendor/tidemark', tidemark], ['/vendor/kinto', kinto]]) {
      if (files && req.url.startsWith(`${prefix}/`)) {
        req.url = req.url.slice(prefix.length);
        return files(req, res, () => notFound(res));
      }
    }
    page(req, res, () => notFound(res));
  });
  const split = opt.listen.lastIndexOf(':');
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(opt.listen.slice(split + 1)), opt.listen.slice(0, split), resolve);
  });
  return server;
}

// One pull in a fresh profile (a new user data directory: IndexedDB on disk, as a user has it).
async function pull(system, rep, origin) {
  const profile = await mkdtemp(join(tmpdir(), 'tidemark-idb-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox'],
    headless: true,
  });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    const errors = [];
    page.on('pageerror', (error) => errors.push(error));
    await page.goto(`${origin}/index.html`);
    await page.waitForFunction(() => document.title === 'ready', null, { timeout: 60_000 }).catch(() => {
      throw new Error(`the page did not load: ${errors.join('; ')}`);
    });
    const config = system === 'tidemark' ? { url: opt.tidemark, ...TIDEMARK } : { url: opt.kinto, ...KINTO };
    const result = await page.evaluate(([s, c]) => window.bench[s](c), [system, config]);
    return { system, rep, records: COUNT, ...result };
  } finally {
    await context.close();
    await rm(profile, { recursive: true, force: true });
  }
}

const objects = await records();
if (objects.length !== COUNT) throw new Error(`${opt.records} holds ${objects.length} records, not ${COUNT}`);
if (systems.includes('tidemark')) {
  const started = Date.now();
  await loadTidemark(objects);
  console.error(`loaded ${COUNT} records into Tidemark in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}
if (systems.includes('kinto')) await prepareKinto();

const server = await servePage();
const origin = `http://${opt.listen}`;
const results = [];
let failed = false;
try {
  for (let rep = 1; rep <= Number(opt.reps); rep++) {
    for (const system of systems) {
      const result = await pull(system, rep, origin);
      console.log(JSON.stringify(result));
      results.push(result);
      if (result.stored !== COUNT) {
        console.error(`${system}: ${result.stored} records in IndexedDB, expected ${COUNT}`);
        failed = true;
      }
    }
  }
} finally {
  server.closeAllConnections();
  server.close();
  await writeFile(opt.out, JSON.stringify(results, null, 1) + '\n');
}
process.exit(failed ? 1 : 0);
