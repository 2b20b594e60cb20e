// The Socket.IO Admin UI protocol on /admin (docs/operations.md "Socket.IO Admin UI"), driven with
// socket.io-client as the official UI drives it: who may connect, what it is told, what it may do, and that
// neither tokens nor cookies ever reach it. The browser end to end test is admin-ui.test.mjs.
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import {
  describe, it, before, after, backends, noteSkips, startServer, shutdown, connectClient, emitAck, waitFor,
  waitDisconnect, assertOk, show, uid, join, http, mintToken, eventually, API_KEY, ISO_MS,
} from './harness.mjs';

noteSkips();

const PASSWORD = `pw-${uid('admin')}`;

/** A socket on /admin; resolves once connected with what it was told first, rejects with connect_error. */
function admin(server, auth, opts = {}) {
  const socket = io(`${server.url}/admin`, {
    forceNew: true,
    reconnection: false,
    transports: ['websocket'],
    auth,
    extraHeaders: opts.extraHeaders,
    timeout: 15_000,
  });
  socket.received = [];
  socket.onAny((event, ...args) => socket.received.push({ event, args, at: Date.now() }));
  server.clients.add(socket);
  return new Promise((resolve, reject) => {
    socket.on('connect', () => resolve(socket));
    socket.on('connect_error', (e) => {
      socket.disconnect();
      reject(e);
    });
  });
}

/** The connect_error message of an /admin handshake that must be refused. */
async function refused(server, auth, opts) {
  try {
    const s = await admin(server, auth, opts);
    s.disconnect();
  } catch (e) {
    return e.message;
  }
  assert.fail(`the /admin handshake with ${show(auth)} was admitted`);
}

/** Waits for an admin event whose arguments match. */
function adminEvent(socket, event, predicate = () => true, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const seen = socket.received.find((r) => r.event === event && predicate(...r.args));
    if (seen) return resolve(seen.args);
    const timer = setTimeout(() => {
      socket.off(event, handler);
      const same = socket.received.filter((r) => r.event === event).map((r) => r.args);
      reject(new Error(`no ${event} matching within ${timeoutMs} ms; ${event} received: ${show(same)}; all: ${show(socket.received.map((r) => r.event))}`));
    }, timeoutMs);
    const handler = (...args) => {
      if (predicate(...args)) {
        clearTimeout(timer);
        socket.off(event, handler);
        resolve(args);
      }
    };
    socket.on(event, handler);
  });
}

describe('admin UI off (the default)', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => shutdown(server));

  it('/admin does not exist: even the right key is told "Invalid namespace"', async () => {
    const message = await refused(server, { username: 'admin', password: API_KEY });
    assert.equal(message, 'Invalid namespace');
  });
});

for (const b of backends()) {
  describe(`admin namespace (${b.name})`, { skip: b.skip }, () => {
    let server;
    before(async () => {
      server = await startServer({
        backend: b.backend || b.name,
        env: { REALTIME_ADMIN_UI: 'true', REALTIME_ADMIN_PASSWORD: PASSWORD, REALTIME_LOG_EVENT_TYPES: '*' },
      });
    });
    after(async () => shutdown(server));

    it('is refused without credentials, with a wrong password, with an app token, and from an origin not listed', async () => {
      assert.equal(await refused(server, {}), 'invalid credentials');
      assert.equal(await refused(server, { username: 'admin', password: `${PASSWORD}x` }), 'invalid credentials');
      assert.equal(await refused(server, { username: 'root', password: PASSWORD }), 'invalid credentials');
      assert.equal(await refused(server, { token: mintToken(uid('u')) }), 'invalid credentials');
      assert.equal(await refused(server, { sessionId: 'made-up' }), 'invalid credentials');
      // The API key is not the password once REALTIME_ADMIN_PASSWORD is set.
      assert.equal(await refused(server, { username: 'admin', password: API_KEY }), 'invalid credentials');
      const other = await refused(server, { username: 'admin', password: PASSWORD }, { extraHeaders: { Origin: 'https://evil.example' } });
      assert.match(other, /REALTIME_ADMIN_UI_ORIGINS/);
    });

    it('tells config, all_sockets and session; the sockets carry user and rooms but no token or cookie', async () => {
      const user = uid('u');
      const token = mintToken(user);
      const room = uid('room');
      const { socket: app } = await connectClient(server, {
        token,
        query: { token, app: 'primary' },
        extraHeaders: { Cookie: `sid=${token}`, Authorization: `Bearer ${token}`, 'X-Api-Key': API_KEY },
      });
      await join(app, room);

      const a = await admin(server, { username: 'admin', password: PASSWORD });
      const [config] = await adminEvent(a, 'config');
      for (const f of ['EMIT', 'JOIN', 'LEAVE', 'DISCONNECT', 'ALL_EVENTS', 'AGGREGATED_EVENTS']) {
        assert.ok(config.supportedFeatures.includes(f), `config lacks ${f}: ${show(config)}`);
      }
      const [sockets] = await adminEvent(a, 'all_sockets');
      const mine = sockets.find((s) => s.id === app.id);
      assert.ok(mine, `all_sockets lacks the app socket ${app.id}: ${show(sockets)}`);
      assert.equal(mine.nsp, '/');
      assert.equal(mine.transport, 'websocket');
      assert.equal(mine.data.userId, user);
      // A socket that sends only a token speaks the compat dialect, whose Socket.IO rooms are `compat|<account>/<room>`.
      assert.equal(mine.data.dialect, 'compat');
      assert.ok(mine.rooms.includes(`compat|primary/${room}`), `rooms: ${show(mine.rooms)}`);
      assert.ok(mine.rooms.includes(app.id), 'its own id is one of its rooms, as socket.io shows it');
      assert.equal(mine.handshake.address, '127.0.0.1');
      assert.match(mine.handshake.time, ISO_MS);
      assert.equal(mine.handshake.query.app, 'primary');
      const [sessionId] = await adminEvent(a, 'session');
      assert.match(sessionId, /^[0-9a-f]{32}$/);
      const [stats] = await adminEvent(a, 'server_stats');
      assert.equal(stats.serverId, `${stats.hostname}:${server.port}`);
      assert.ok(stats.namespaces.some((n) => n.name === '/' && n.socketsCount >= 1), show(stats));
      assert.equal(typeof stats.pid, 'number');

      const everything = JSON.stringify(a.received);
      for (const secret of [token, API_KEY, PASSWORD]) {
        assert.ok(!everything.includes(secret), `a credential reached the admin UI: ${show(a.received, 4000)}`);
      }
      assert.ok(!/cookie|authorization|x-api-key/i.test(everything), `credential headers shown: ${show(mine.handshake)}`);

      // The session id lets the UI reconnect without the password.
      const again = await admin(server, { sessionId });
      await adminEvent(again, 'all_sockets');
      again.disconnect();
      a.disconnect();
      app.disconnect();
    });

    it('reports connections, rooms, events (credentials redacted) and disconnections live', async () => {
      const a = await admin(server, { username: 'admin', password: PASSWORD });
      await adminEvent(a, 'all_sockets');
      const user = uid('u');
      const { socket: app } = await connectClient(server, { user });
      const [connected, at] = await adminEvent(a, 'socket_connected', (s) => s.id === app.id);
      assert.equal(connected.data.userId, user);
      assert.match(at, ISO_MS);

      const room = uid('room');
      await join(app, room);
      await adminEvent(a, 'room_joined', (nsp, r, id) => nsp === '/' && r === `compat|primary/${room}` && id === app.id);

      const secret = mintToken(user);
      assertOk(await emitAck(app, 'auth:refresh', { token: secret }), 'auth:refresh');
      const [, , args] = await adminEvent(a, 'event_received', (nsp, id, args) => id === app.id && args[0] === 'auth:refresh');
      assert.deepEqual(args, ['auth:refresh', { token: '[redacted]' }]);
      assert.ok(!JSON.stringify(a.received).includes(secret), 'the refreshed token reached the admin UI');

      const stats = await adminEvent(a, 'server_stats', (s) => s.aggregatedEvents.some((e) => e.type === 'packetsIn'), 8000);
      assert.ok(stats[0].aggregatedEvents.every((e) => e.timestamp % 1000 === 0 && e.count > 0), show(stats));

      const t0 = Date.now();
      const appId = app.id; // socket.io-client forgets its id on disconnect
      app.disconnect();
      const [nsp, , reason] = await adminEvent(a, 'socket_disconnected', (n, i) => i === appId, 5000);
      assert.equal(nsp, '/');
      assert.equal(reason, 'client namespace disconnect');
      assert.ok(Date.now() - t0 < 5000);
      a.disconnect();
    });

    it('acts: emit to a room, join and leave a room, disconnect one socket; each is in the audit log', async () => {
      const a = await admin(server, { username: 'admin', password: PASSWORD });
      await adminEvent(a, 'all_sockets');
      const [u1, u2] = [uid('u'), uid('u')];
      const { socket: c1 } = await connectClient(server, { user: u1 });
      const { socket: c2 } = await connectClient(server, { user: u2 });
      const room = uid('room');
      await join(c1, room);
      const [, key] = await adminEvent(a, 'room_joined', (nsp, r, id) => id === c1.id && r.endsWith(`primary/${room}`));

      const notice = waitFor(c1, 'maintenance', (p) => p && p.in === 5);
      a.emit('emit', '/', key, 'maintenance', { in: 5 });
      await notice;
      assert.ok(!c2.received.some((r) => r.event === 'maintenance'), 'the emit reached a socket outside the room');

      a.emit('join', '/', 'ops-broadcast', c2.id);
      await adminEvent(a, 'room_joined', (nsp, r, id) => r === 'ops-broadcast' && id === c2.id);
      const ops = waitFor(c2, 'ops', () => true);
      a.emit('emit', '/', 'ops-broadcast', 'ops', 'hello');
      await ops;
      a.emit('leave', '/', 'ops-broadcast', c2.id);
      await adminEvent(a, 'room_left', (nsp, r, id) => r === 'ops-broadcast' && id === c2.id);

      // The admin namespace itself cannot be acted on, and a malformed action is refused, not crashed on.
      a.emit('_disconnect', '/admin', false);
      await adminEvent(a, 'error', (e) => /application namespace/.test(e.message));
      a.emit('join', '/', 42, c2.id);
      await adminEvent(a, 'error', (e) => /room must be a string/.test(e.message));
      assert.ok(a.connected, 'the admin socket survived its refused actions');

      const gone = waitDisconnect(c1, 5000);
      const c1Id = c1.id; // socket.io-client forgets its id on disconnect
      a.emit('_disconnect', '/', false, c1Id);
      assert.equal(await gone, 'io server disconnect');
      await adminEvent(a, 'socket_disconnected', (n, id) => id === c1Id, 5000);
      assert.ok(c2.connected, 'only the socket named was disconnected');

      const events = await eventually('the admin actions in the audit log', async () => {
        const res = await http(server, 'GET', '/api/events?limit=200', { apiKey: API_KEY });
        const list = (res.body.events || []).filter((e) => e.eventType.startsWith('admin:'));
        return list.length >= 5 ? list : false;
      });
      const types = events.map((e) => e.eventType);
      for (const t of ['admin:emit', 'admin:join', 'admin:leave', 'admin:disconnect']) {
        assert.ok(types.includes(t), `audit log lacks ${t}: ${show(events)}`);
      }
      const d = events.find((e) => e.eventType === 'admin:disconnect');
      assert.equal(d.socketId, c1Id);
      assert.equal(d.userId, 'admin:admin');
      c2.disconnect();
      a.disconnect();
    });

    it('/dashboard and its stream need the admin password or the API key', async () => {
      const basic = (u, p) => ({ Authorization: `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}` });
      const none = await http(server, 'GET', '/dashboard');
      assert.equal(none.status, 401);
      assert.match(none.headers.get('www-authenticate'), /^Basic /);
      assert.match(none.text, /invalid credentials/);
      assert.equal((await http(server, 'GET', '/dashboard', { headers: basic('admin', 'nope') })).status, 401);
      assert.equal((await http(server, 'GET', '/dashboard', { headers: basic('root', PASSWORD) })).status, 401);
      assert.equal((await http(server, 'GET', '/dashboard/stream')).status, 401);
      const page = await http(server, 'GET', '/dashboard', { headers: basic('admin', PASSWORD) });
      assert.equal(page.status, 200);
      assert.match(page.headers.get('content-type'), /text\/html/);
      assert.ok(!/https?:\/\//.test(page.text), 'the page loads nothing from elsewhere');
      assert.equal((await http(server, 'GET', '/dashboard', { apiKey: API_KEY })).status, 200);

      const res = await fetch(`${server.url}/dashboard/stream`, { headers: basic('admin', PASSWORD), signal: AbortSignal.timeout(10_000) });
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type'), /text\/event-stream/);
      const reader = res.body.getReader();
      let text = '';
      while (!/\n\n/.test(text)) text += new TextDecoder().decode((await reader.read()).value);
      await reader.cancel();
      const data = JSON.parse(text.match(/^data: (.*)$/m)[1]);
      assert.match(text, /^event: snapshot$/m);
      assert.equal(data.database.status, 'connected');
      assert.equal(data.database.kind, b.name);
      for (const k of ['connections', 'usersOnline', 'messagesPerSecond', 'broadcastsPerSecond', 'rooms', 'events', 'nodes']) {
        assert.ok(k in data, `snapshot lacks ${k}: ${show(data)}`);
      }
    });

    it('is invisible to app sockets: they hear none of its events', async () => {
      const { socket: app } = await connectClient(server, { user: uid('u') });
      const a = await admin(server, { username: 'admin', password: PASSWORD });
      // The greeting's stats, then one of the 2 s ticks: both went out while the app socket was connected.
      const [first] = await adminEvent(a, 'server_stats');
      await adminEvent(a, 'server_stats', (s) => s.uptime > first.uptime, 5000);
      await join(app, uid('room'));
      const adminEvents = ['config', 'all_sockets', 'server_stats', 'session', 'socket_connected', 'room_joined', 'event_received'];
      assert.deepEqual(app.received.filter((r) => adminEvents.includes(r.event)), []);
      a.disconnect();
      app.disconnect();
    });
  });
}

describe('admin UI with the API key as its password', () => {
  let server;
  before(async () => {
    server = await startServer({ env: { REALTIME_ADMIN_UI: 'true' } });
  });
  after(async () => shutdown(server));

  it('admits the API key when REALTIME_ADMIN_PASSWORD is unset', async () => {
    const a = await admin(server, { username: 'admin', password: API_KEY });
    await adminEvent(a, 'config');
    a.disconnect();
    assert.equal(await refused(server, { username: 'admin', password: '' }), 'invalid credentials');
  });

  it('with REALTIME_CORS_ORIGIN=*, answers the Admin UI origin with credentials and every other origin with *', async () => {
    const poll = (origin) =>
      fetch(`${server.url}/socket.io/?EIO=4&transport=polling`, { headers: { Origin: origin }, signal: AbortSignal.timeout(5000) });
    const ui = await poll('https://admin.socket.io');
    assert.equal(ui.headers.get('access-control-allow-origin'), 'https://admin.socket.io');
    assert.equal(ui.headers.get('access-control-allow-credentials'), 'true');
    await ui.text();
    const other = await poll('https://chat.example');
    assert.equal(other.headers.get('access-control-allow-origin'), '*');
    assert.equal(other.headers.get('access-control-allow-credentials'), null);
    await other.text();
  });

  it('refuses to start without any password', async () => {
    await assert.rejects(
      startServer({ env: { REALTIME_ADMIN_UI: 'true', REALTIME_API_KEY: undefined } }),
      /REALTIME_ADMIN_PASSWORD/,
    );
  });
});

describe('admin UI origins with a CORS list', () => {
  let server;
  before(async () => {
    server = await startServer({
      env: {
        REALTIME_ADMIN_UI: 'true',
        REALTIME_ADMIN_PASSWORD: PASSWORD,
        REALTIME_CORS_ORIGIN: 'https://chat.example',
        REALTIME_ADMIN_UI_ORIGINS: 'https://admin.example',
      },
    });
  });
  after(async () => shutdown(server));

  it('allows the Admin UI origin with credentials, and still no other', async () => {
    const poll = (origin) =>
      fetch(`${server.url}/socket.io/?EIO=4&transport=polling`, { headers: { Origin: origin }, signal: AbortSignal.timeout(5000) });
    for (const origin of ['https://admin.example', 'https://chat.example']) {
      const res = await poll(origin);
      assert.equal(res.headers.get('access-control-allow-origin'), origin, `CORS for ${origin}`);
      assert.equal(res.headers.get('access-control-allow-credentials'), 'true');
      await res.text();
    }
    const evil = await poll('https://evil.example');
    assert.equal(evil.headers.get('access-control-allow-origin'), null);
    await evil.text();
    // The app's own origin may not open the Admin UI.
    const message = await refused(server, { username: 'admin', password: PASSWORD }, { extraHeaders: { Origin: 'https://chat.example' } });
    assert.match(message, /REALTIME_ADMIN_UI_ORIGINS/);
    const a = await admin(server, { username: 'admin', password: PASSWORD }, { extraHeaders: { Origin: 'https://admin.example' } });
    await adminEvent(a, 'config');
    a.disconnect();
  });
});
