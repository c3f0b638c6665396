// Serves the demo app: the page (public/), the `tidemark` package's files (/vendor/tidemark/,
// from node_modules) and /config.json, which tells the page where the sync server is.
//
//   node www/serve.mjs --listen 127.0.0.1:5173 --server http://127.0.0.1:8080
//
// Each flag also reads an environment variable: TIDEMARK_DEMO_LISTEN (host:port),
// TIDEMARK_DEMO_SERVER, TIDEMARK_DEMO_APP. The end-to-end tests import `startAppServer`.

import http from 'node:http';
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import sirv from 'sirv';

const here = fileURLToPath(new URL('.', import.meta.url));
const VENDOR = '/vendor/tidemark';

/**
 * Starts the app's HTTP server on `host:port` (port 0 picks one). `config` is read on every
 * request to /config.json, so a caller may fill in `config.server` after the app's origin is
 * known (the sync server needs that origin for `--cors-origin` before it starts).
 * Resolves to `{url, close}`.
 */
export async function startAppServer({ host = '127.0.0.1', port = 0, config }) {
  // `dev`: read the files on every request, so edits to the page show on reload.
  const page = sirv(`${here}public`, { dev: true });
  const pkg = sirv(realpathSync(`${here}node_modules/tidemark`), { dev: true });
  const notFound = (res) => {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
  };
  const server = http.createServer((req, res) => {
    if (req.url === '/config.json') {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify(config));
    } else if (req.url.startsWith(`${VENDOR}/`)) {
      req.url = req.url.slice(VENDOR.length);
      pkg(req, res, () => notFound(res));
    } else {
      page(req, res, () => notFound(res));
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const address = server.address();
  return {
    url: `http://${address.address}:${address.port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(resolve);
      }),
  };
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const env = process.env;
  const { values } = parseArgs({
    options: {
      listen: { type: 'string', default: env.TIDEMARK_DEMO_LISTEN ?? '127.0.0.1:5173' },
      server: { type: 'string', default: env.TIDEMARK_DEMO_SERVER ?? 'http://127.0.0.1:8080' },
      app: { type: 'string', default: env.TIDEMARK_DEMO_APP ?? 'notes-demo' },
    },
  });
  const split = values.listen.lastIndexOf(':');
  const app = await startAppServer({
    host: values.listen.slice(0, split),
    port: Number(values.listen.slice(split + 1)),
    config: { server: values.server, app: values.app },
  });
  console.log(`tidemark demo on ${app.url} (sync server: ${values.server})`);
}
