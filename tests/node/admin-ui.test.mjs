// SQLite only: these tests look at what two pages show in a real browser (headless Chromium); the database
// behind them is exercised on both backends by admin-namespace.test.mjs, and Chromium twice would double the
// file's time on a 2-core CI machine for nothing more.
//
// The official Socket.IO Admin UI (npm @socket.io/admin-ui, its built `ui/dist` served from here) against the
// server's /admin namespace, and the server's own /dashboard. Needs Debian's chromium at /usr/bin/chromium
// (.ci/run installs it; never a browser download). Screenshots go to REALTIME_TEST_OUTPUT (default
// target/test-output/admin-ui).
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { existsSync, mkdirSync, readFileSync, rmSync, mkdtempSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  describe, it, before, after, startServer, shutdown, connectClient, emitAck, waitDisconnect, assertOk, uid, join,
  freePort, show, REPO_ROOT,
} from './harness.mjs';

const CHROMIUM = '/usr/bin/chromium';
const OUT = process.env.REALTIME_TEST_OUTPUT || path.join(REPO_ROOT, 'target', 'test-output', 'admin-ui');
const PASSWORD = `pw-${uid('admin')}`;
const UI_DIST = path.join(path.dirname(createRequire(import.meta.url).resolve('@socket.io/admin-ui/package.json')), 'ui', 'dist');
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.png': 'image/png', '.svg': 'image/svg+xml', '.map': 'application/json' };

/** Serves the Admin UI's built files, as admin.socket.io would. */
async function serveUi() {
  const port = await freePort();
  const server = createServer((req, res) => {
    const p = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const file = path.join(UI_DIST, p === '/' ? 'index.html' : p);
    if (!file.startsWith(UI_DIST) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream' }).end(readFileSync(file));
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${port}` };
}

/** Chromium with a fresh profile of its own (a persistent context is how playwright takes --user-data-dir). */
async function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium; .ci/run does it)`);
  }
  const profile = mkdtempSync(path.join(os.tmpdir(), 'nself-rt-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    locale: 'en-US',
    viewport: { width: 1280, height: 860 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  }).catch((e) => {
    rmSync(profile, { recursive: true, force: true });
    throw e;
  });
  context.profile = profile;
  await localOnly(context);
  return context;
}

/** Only the two local servers are reachable: the UI's web fonts and icon CDN are cut off. */
async function localOnly(context) {
  await context.route('**/*', (route) => {
    const host = new URL(route.request().url()).hostname;
    return host === '127.0.0.1' || host === 'localhost' ? route.continue() : route.abort();
  });
}

async function shot(page, name) {
  mkdirSync(OUT, { recursive: true });
  await page.screenshot({ path: path.join(OUT, `${name}.png`), fullPage: true });
}

/** A number shown in an element, once it satisfies `ok`. */
async function numberIn(page, selector, ok, what, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = (await page.locator(selector).textContent()) ?? '';
    const n = Number(last.trim());
    if (Number.isFinite(n) && ok(n)) return n;
    if (Date.now() > deadline) assert.fail(`${what}: ${selector} showed ${show(last)} for ${timeout} ms`);
    await page.waitForTimeout(200);
  }
}

describe('in the browser (sqlite)', () => {
  let server, ui, browser;
  before(async () => {
    ui = await serveUi();
    server = await startServer({
      env: {
        REALTIME_ADMIN_UI: 'true',
        REALTIME_ADMIN_PASSWORD: PASSWORD,
        REALTIME_ADMIN_UI_ORIGINS: ui.url,
        REALTIME_LOG_EVENT_TYPES: '*',
      },
    });
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    if (browser?.profile) rmSync(browser.profile, { recursive: true, force: true });
    ui?.server.close();
    if (server) await shutdown(server);
  });

  async function adminUiPage() {
    const page = await browser.newPage();
    await page.goto(ui.url);
    return page;
  }

  async function login(page, password) {
    await page.getByLabel('Server URL').fill(server.url);
    await page.getByLabel('Username').fill('admin');
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Connect' }).click();
  }

  it('the official Admin UI refuses a wrong password', async () => {
    const page = await adminUiPage();
    await login(page, `${PASSWORD}-wrong`);
    await page.getByText('Invalid credentials').waitFor({ timeout: 10_000 });
    await shot(page, 'admin-ui-wrong-password');
    await page.close();
  });

  it('the official Admin UI lists the server, the sockets and their rooms, sees a disconnect, and disconnects a socket', async () => {
    const room = uid('room');
    const { socket: stay } = await connectClient(server, { user: uid('alice') });
    const { socket: leave } = await connectClient(server, { user: uid('bob') });
    await join(stay, room);
    await join(leave, room);

    const page = await adminUiPage();
    await login(page, PASSWORD);
    await page.getByLabel('Password').waitFor({ state: 'hidden', timeout: 10_000 });

    await page.goto(`${ui.url}/#/servers/`);
    await page.getByText(`:${server.port}`).first().waitFor({ timeout: 10_000 });
    await shot(page, 'admin-ui-servers');

    await page.goto(`${ui.url}/#/sockets/`);
    await page.getByText(stay.id).waitFor({ timeout: 10_000 });
    await page.getByText(leave.id).waitFor({ timeout: 10_000 });
    await shot(page, 'admin-ui-sockets');

    await page.goto(`${ui.url}/#/rooms/`);
    await page.getByText(`primary/${room}`).waitFor({ timeout: 10_000 });
    await shot(page, 'admin-ui-rooms');

    // A client that leaves is gone from the list within 5 s.
    await page.goto(`${ui.url}/#/sockets/`);
    const [stayId, leaveId] = [stay.id, leave.id]; // socket.io-client forgets its id on disconnect
    await page.getByText(leaveId).waitFor({ timeout: 10_000 });
    leave.disconnect();
    await page.getByText(leaveId).waitFor({ state: 'detached', timeout: 5000 });

    // The row's disconnect button really disconnects that client, and only it.
    const { socket: other } = await connectClient(server, { user: uid('carol') });
    await page.getByText(other.id).waitFor({ timeout: 10_000 });
    const gone = waitDisconnect(stay, 5000);
    await page.locator('tr', { hasText: stayId }).getByRole('button').click();
    assert.equal(await gone, 'io server disconnect');
    // (the click also opens the socket's page, which keeps showing it as disconnected)
    await page.goto(`${ui.url}/#/sockets/`);
    await page.getByText(other.id).waitFor({ timeout: 10_000 });
    // (the socket's page fades out: wait for it to leave the document)
    await page.getByText(stayId).first().waitFor({ state: 'detached', timeout: 5000 });
    assert.ok(other.connected, 'another client was disconnected too');
    await shot(page, 'admin-ui-after-disconnect');
    other.disconnect();
    await page.close();
  });

  it('/dashboard shows the numbers change while clients connect and send', async () => {
    const page = await browser.newPage();
    await page.setViewportSize({ width: 390, height: 844 }); // a phone
    // What the browser sends once its user typed the admin user and password into the Basic auth prompt.
    await page.setExtraHTTPHeaders({ Authorization: `Basic ${Buffer.from(`admin:${PASSWORD}`).toString('base64')}` });
    await page.goto(`${server.url}/dashboard`);
    await page.locator('#live', { hasText: 'live' }).waitFor({ timeout: 10_000 });
    const before = await numberIn(page, '#connections', () => true, 'connections');

    const room = uid('busy');
    const clients = [];
    for (let i = 0; i < 3; i++) {
      const { socket } = await connectClient(server, { user: uid(`user${i}`) });
      await join(socket, room);
      clients.push(socket);
    }
    await numberIn(page, '#connections', (n) => n >= before + 3, 'connections after 3 clients joined');
    await numberIn(page, '#users', (n) => n >= 3, 'users online');

    // Messages for a few seconds: the rate shows above 0 and the room is the busiest.
    let sending = true;
    const sender = (async () => {
      while (sending) {
        assertOk(await emitAck(clients[0], 'message:send', { roomName: room, content: uid('m') }), 'message:send');
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    try {
      await numberIn(page, '#mps', (n) => n > 0, 'messages per second while sending');
      await page.locator('#rooms', { hasText: room }).waitFor({ timeout: 10_000 });
      await page.locator('#latency', { hasText: /\d/ }).waitFor({ timeout: 10_000 });
      await page.locator('#deps', { hasText: 'connected' }).waitFor({ timeout: 10_000 });
      await shot(page, 'dashboard-phone');
      await page.setViewportSize({ width: 1280, height: 860 });
      await page.waitForTimeout(1200); // one more snapshot drawn at the new width
      await shot(page, 'dashboard');
    } finally {
      sending = false;
      await sender;
    }
    for (const c of clients) c.disconnect();
    await numberIn(page, '#connections', (n) => n <= before, 'connections after the clients left');
    await page.close();
  });
});
