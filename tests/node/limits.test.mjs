// Limits and feature switches: REALTIME_MAX_CONNECTIONS, REALTIME_RATE_LIMIT (new connections per IP per minute),
// REALTIME_AUTO_CREATE_ROOMS=false, REALTIME_CORS_ORIGIN (polling and /api), gzip, and the feature flags
// REALTIME_ENABLE_PRESENCE / _TYPING / _COMPRESSION, REALTIME_RATE_LIMIT_ENABLED, REALTIME_LOG_EVENTS; bare
// Engine.IO sessions (never sending CONNECT) counted from their first request, REALTIME_CONNECT_TIMEOUT.
// Run against SQLite and PostgreSQL.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { gunzipSync } from 'node:zlib';
import WebSocket from 'ws';
import {
  describe, it, before, after, backends, noteSkips, startServer, shutdown, connectClient, emitAck, waitDisconnect,
  assertOk, assertErr, show, uid, join, http, API_KEY, mintToken, eventually, listOf, sleep,
} from './harness.mjs';

noteSkips();

const MAX_CONNECTIONS_REFUSAL = 'Connection refused: the server is at REALTIME_MAX_CONNECTIONS';
const RATE_REFUSAL = 'Connection refused: too many new connections from this address (REALTIME_RATE_LIMIT)';

/** Resolves {ok, c} when the client authenticates, else {ok: false, reason: the connect_error message}. */
async function tryConnect(server, user, opts = {}) {
  try {
    const c = await connectClient(server, { user, ...opts });
    return { ok: true, c };
  } catch (e) {
    return { ok: false, reason: e.connectError ? e.connectError.message : e.message };
  }
}

async function connectionCount(server) {
  const r = await http(server, 'GET', '/api/stats', { apiKey: API_KEY });
  assert.equal(r.status, 200, show(r.body));
  return r.body.connections;
}

/** A raw request with chosen headers (no automatic decompression); resolves {status, headers, text}, the
 *  body gunzipped by hand when it came gzip-encoded. */
function rawRequest(server, method, p, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = request(`${server.url}${p}`, { method, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        const text = (res.headers['content-encoding'] === 'gzip' ? gunzipSync(body) : body).toString('utf8');
        resolve({ status: res.statusCode, headers: res.headers, text });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

/** A raw WebSocket upgrade of the Socket.IO endpoint; resolves {status} (101 when switched). */
function rawUpgrade(server, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = request(`${server.url}/socket.io/?EIO=4&transport=websocket`, {
      headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', ...headers },
    });
    req.on('upgrade', (res, sock) => {
      sock.destroy();
      resolve({ status: res.statusCode });
    });
    req.on('response', (res) => {
      res.resume();
      resolve({ status: res.statusCode, headers: res.headers });
    });
    req.on('error', reject);
    req.end();
  });
}


/** A bare Engine.IO session over WebSocket (no Socket.IO CONNECT is ever sent). Resolves
 *  {ok: true, closed: Promise<ms after opening>} once the server's open packet arrives, or {ok: false, status}. */
function bareWebSocket(server, headers = {}) {
  return new Promise((resolve) => {
    const started = Date.now();
    const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`, { headers });
    const closed = new Promise((r) => ws.on('close', () => r(Date.now() - started)));
    ws.on('unexpected-response', (req, res) => {
      res.resume();
      req.destroy();
      resolve({ ok: false, status: res.statusCode, retryAfter: res.headers['retry-after'] });
    });
    ws.on('error', (e) => resolve({ ok: false, status: 0, error: e.message }));
    ws.on('message', (m) => {
      if (String(m).startsWith('0')) resolve({ ok: true, ws, closed });
    });
  });
}

/** A bare Engine.IO session over long-polling: the handshake GET only. Resolves {ok: true, sid} or
 *  {ok: false, status, retryAfter}. */
async function barePoll(server, headers = {}) {
  const r = await rawRequest(server, 'GET', '/socket.io/?EIO=4&transport=polling', headers);
  if (r.status !== 200) return { ok: false, status: r.status, retryAfter: r.headers['retry-after'], text: r.text };
  return { ok: true, sid: JSON.parse(r.text.slice(1)).sid };
}

/** Counts of a batch of bare sessions: {opened, refused: {status: n}}. */
function tally(results) {
  const refused = {};
  for (const r of results.filter((x) => !x.ok)) refused[r.status] = (refused[r.status] || 0) + 1;
  return { opened: results.filter((r) => r.ok).length, refused };
}

for (const backend of backends()) {
  describe(`REALTIME_MAX_CONNECTIONS=2 [${backend.name}]`, { skip: backend.skip }, () => {
    let server;
    before(async () => {
      server = await startServer({ backend: backend.name, env: { REALTIME_MAX_CONNECTIONS: '2' } });
    });
    after(() => shutdown(server));

    it('a third concurrent connection is refused naming the limit; a slot frees up when one leaves', async () => {
      const a = await connectClient(server, { user: uid('a') });
      const b = await connectClient(server, { user: uid('b') });
      const third = await tryConnect(server, uid('c'));
      assert.equal(third.ok, false, 'the third connection must not be admitted');
      assert.equal(third.reason, MAX_CONNECTIONS_REFUSAL);
      assert.ok(a.socket.connected && b.socket.connected, 'the admitted clients stay connected');
      const gone = waitDisconnect(a.socket);
      a.socket.disconnect();
      await gone;
      await eventually('the server to count one connection', async () => (await connectionCount(server)) === 1);
      const again = await tryConnect(server, uid('d'));
      assert.equal(again.ok, true, `after a disconnect a new connection is admitted: ${again.reason}`);
      again.c.socket.disconnect();
      b.socket.disconnect();
      await eventually('the server to count no connection', async () => (await connectionCount(server)) === 0);
    });

    it('a burst of simultaneous handshakes admits exactly the limit', async () => {
      const results = await Promise.all(Array.from({ length: 8 }, (_, i) => tryConnect(server, uid(`burst${i}`))));
      const admitted = results.filter((r) => r.ok);
      assert.equal(admitted.length, 2, `admitted ${admitted.length} of 8 with REALTIME_MAX_CONNECTIONS=2: ${show(results.map((r) => r.ok || r.reason))}`);
      for (const r of results.filter((x) => !x.ok)) assert.equal(r.reason, MAX_CONNECTIONS_REFUSAL);
      for (const r of admitted) r.c.socket.disconnect();
    });
  });

  describe(`REALTIME_RATE_LIMIT=3 (new connections per IP per minute) [${backend.name}]`, { skip: backend.skip }, () => {
    let server;
    before(async () => {
      server = await startServer({ backend: backend.name, env: { REALTIME_RATE_LIMIT: '3' } });
    });
    after(() => shutdown(server));

    it('a refused token costs a point too; the 4th handshake within a minute from one IP is refused naming the limit', async () => {
      const bad = await tryConnect(server, undefined, { token: mintToken(uid('x'), {}, { secret: 'wrong' }) });
      assert.equal(bad.ok, false);
      assert.ok(bad.reason.startsWith('Invalid token'), bad.reason);
      const results = [];
      for (let i = 0; i < 4; i++) {
        const r = await tryConnect(server, uid(`c${i}`));
        results.push(r);
        if (r.ok) r.c.socket.disconnect();
      }
      assert.deepEqual(results.map((r) => r.ok || r.reason), [true, true, RATE_REFUSAL, RATE_REFUSAL],
        'the bad token took the first point, two good handshakes the others');
      const h = await http(server, 'GET', '/health');
      assert.equal(h.status, 200, 'HTTP is not affected');
    });
  });

  describe(`X-Forwarded-For behind a proxy, REALTIME_RATE_LIMIT=3 [${backend.name}]`, { skip: backend.skip }, () => {
    // The tests connect from 127.0.0.1, a trusted proxy by default (REALTIME_TRUSTED_PROXIES=127.0.0.1,::1).
    let server;
    let untrusting;
    before(async () => {
      [server, untrusting] = await Promise.all([
        startServer({ backend: backend.name, env: { REALTIME_RATE_LIMIT: '3' } }),
        startServer({ backend: backend.name, env: { REALTIME_RATE_LIMIT: '3', REALTIME_TRUSTED_PROXIES: 'none' } }),
      ]);
    });
    after(() => Promise.all([shutdown(server), shutdown(untrusting)]));

    it('a client rotating the first X-Forwarded-For entry (nginx appends the real one) stays one address: 3 of 30 admitted, 27 refused', async () => {
      const results = [];
      for (let i = 0; i < 30; i++) {
        // what nginx's $proxy_add_x_forwarded_for sends: the client's own header, then the address it saw
        const r = await tryConnect(server, uid(`rot${i}`), { extraHeaders: { 'X-Forwarded-For': `10.9.${i}.${i + 1}, 203.0.113.7` } });
        results.push(r.ok || r.reason);
        if (r.ok) r.c.socket.disconnect();
      }
      // Three handshakes admitted, three refused by name; then the address has spent its Engine.IO session
      // budget too (twice REALTIME_RATE_LIMIT): the rest are refused before any handshake (HTTP 429).
      assert.deepEqual(results.slice(0, 6), [true, true, true, RATE_REFUSAL, RATE_REFUSAL, RATE_REFUSAL], show(results));
      assert.ok(results.slice(6).every((r) => r !== true), `none of the other 24 is admitted: ${show(results)}`);
      // another real client behind the same proxy has its own budget, and is recorded with its own address
      const other = await tryConnect(server, uid('other'), { extraHeaders: { 'X-Forwarded-For': '10.0.0.1, 198.51.100.20' } });
      assert.equal(other.ok, true, `a different client address is admitted: ${show(other.reason)}`);
      const conns = listOf((await http(server, 'GET', '/api/connections', { apiKey: API_KEY })).body, 'connections');
      const mine = conns.find((c) => c.socketId === other.c.socket.id);
      assert.equal(mine?.ip, '198.51.100.20', `the recorded address is the right-most untrusted entry: ${show(conns)}`);
      other.c.socket.disconnect();
    });

    it('with REALTIME_TRUSTED_PROXIES=none the header is ignored: any X-Forwarded-For is the peer itself', async () => {
      const results = [];
      for (let i = 0; i < 5; i++) {
        const r = await tryConnect(untrusting, uid(`fwd${i}`), { extraHeaders: { 'X-Forwarded-For': `198.51.100.${i + 1}` } });
        results.push(r.ok || r.reason);
        if (r.ok) r.c.socket.disconnect();
      }
      assert.deepEqual(results, [true, true, true, RATE_REFUSAL, RATE_REFUSAL], show(results));
    });
  });

  describe(`bare Engine.IO sessions (no CONNECT): REALTIME_RATE_LIMIT=10, REALTIME_MAX_CONNECTIONS=10, REALTIME_CONNECT_TIMEOUT=1500 [${backend.name}]`, { skip: backend.skip }, () => {
    // Before: with a limit of 10, 5,000 bare websockets and 2,000 bare polling sessions were accepted and held
    // ~45 s. Each address has its own X-Forwarded-For (the tests' 127.0.0.1 is a trusted proxy).
    let server;
    before(async () => {
      server = await startServer({
        backend: backend.name,
        env: { REALTIME_RATE_LIMIT: '10', REALTIME_MAX_CONNECTIONS: '10', REALTIME_CONNECT_TIMEOUT: '1500' },
      });
    });
    after(() => shutdown(server));

    it('one address: of 60 bare websockets and then 60 bare polling handshakes, 20 open (twice REALTIME_RATE_LIMIT), the rest get 429 with Retry-After; every opened one is closed at REALTIME_CONNECT_TIMEOUT', async () => {
      const from = { 'X-Forwarded-For': '198.51.100.1' };
      const sockets = await Promise.all(Array.from({ length: 60 }, () => bareWebSocket(server, from)));
      const polls = await Promise.all(Array.from({ length: 60 }, () => barePoll(server, from)));
      const t = tally([...sockets, ...polls]);
      assert.ok(t.opened >= 20 && t.opened <= 21, `20 sessions open (one more may refill meanwhile): ${show(t)}`);
      assert.equal(t.refused[429], 120 - t.opened, `the others are refused with 429: ${show(t)}`);
      for (const r of [...sockets, ...polls].filter((x) => !x.ok)) assert.ok(Number(r.retryAfter) >= 1, show(r));
      // a well-behaved client from the same address is refused too: its budget went on bare sessions
      const same = await tryConnect(server, uid('same'), { extraHeaders: from });
      assert.equal(same.ok, false, 'the address has spent its session budget');
      // the opened sessions end at the deadline, not at once and not at the ping timeout
      const closedAfter = await Promise.all(sockets.filter((r) => r.ok).map((r) => r.closed));
      const waited = await Promise.all(polls.filter((r) => r.ok).map(async (r) => {
        const started = Date.now();
        const res = await rawRequest(server, 'GET', `/socket.io/?EIO=4&transport=polling&sid=${r.sid}`, from);
        return { ms: Date.now() - started, status: res.status, text: res.text };
      }));
      for (const ms of closedAfter) assert.ok(ms >= 1000 && ms < 8000, `a bare websocket closed after ${ms} ms`);
      for (const w of waited) {
        assert.ok(w.status === 400 || w.text.includes('1'), `the poll of a closed session ends it: ${show(w)}`);
        assert.ok(w.ms < 8000, `a bare polling session ended after ${w.ms} ms`);
      }
      // another address is not affected
      const other = await tryConnect(server, uid('other'), { extraHeaders: { 'X-Forwarded-For': '198.51.100.2' } });
      assert.equal(other.ok, true, `another address connects: ${show(other.reason)}`);
      other.c.socket.disconnect();
    });

    it('many addresses: bare sessions waiting to join stop at the allowance (64 with REALTIME_MAX_CONNECTIONS=10), the rest get 503; once the deadline closes them a client connects', async () => {
      const results = await Promise.all(Array.from({ length: 100 }, (_, i) =>
        bareWebSocket(server, { 'X-Forwarded-For': `203.0.113.${1 + (i % 10)}` })));
      const t = tally(results);
      assert.ok(t.opened <= 64, `at most 64 bare sessions open at once: ${show(t)}`);
      assert.ok(t.opened >= 50, `the allowance is used, not refused early: ${show(t)}`);
      assert.equal(t.refused[503], 100 - t.opened, `the others are refused with 503: ${show(t)}`);
      await Promise.all(results.filter((r) => r.ok).map((r) => r.closed));
      const c = await eventually('a client to connect once the bare sessions are closed', async () => {
        const r = await tryConnect(server, uid('after'), { extraHeaders: { 'X-Forwarded-For': '192.0.2.50' } });
        return r.ok && r.c;
      });
      assert.ok(c.socket.connected);
      c.socket.disconnect();
    });
  });

  describe(`REALTIME_AUTO_CREATE_ROOMS=false [${backend.name}]`, { skip: backend.skip }, () => {
    let server;
    before(async () => {
      server = await startServer({ backend: backend.name, env: { REALTIME_AUTO_CREATE_ROOMS: 'false' } });
    });
    after(() => shutdown(server));

    it('joining a room that does not exist → ROOM_NOT_FOUND; an admin-created room is joinable', async () => {
      const { socket } = await connectClient(server, { user: uid('u') });
      const missing = uid('nowhere');
      assertErr(await emitAck(socket, 'room:join', { roomName: missing }), 'ROOM_NOT_FOUND', 'room:join of a missing room');
      const rooms = listOf((await http(server, 'GET', '/api/rooms', { apiKey: API_KEY })).body, 'rooms');
      assert.ok(!rooms.some((r) => r.name === missing), `a refused join created nothing: ${show(rooms)}`);
      const name = uid('made');
      const res = await http(server, 'POST', '/api/rooms', { apiKey: API_KEY, body: { name } });
      assert.equal(res.status, 201, show(res.body));
      const d = await join(socket, name);
      assert.equal(d.roomName, name, show(d));
      assertOk(await emitAck(socket, 'message:send', { roomName: name, content: 'hi' }), 'send');
      socket.disconnect();
    });
  });

  describe(`REALTIME_CORS_ORIGIN=http://good.test [${backend.name}]`, { skip: backend.skip }, () => {
    let server;
    before(async () => {
      server = await startServer({ backend: backend.name, env: { REALTIME_CORS_ORIGIN: 'http://good.test' } });
    });
    after(() => shutdown(server));

    it('the configured origin is allowed on the polling transport and on /api (preflight included), another is not', async () => {
      const poll = '/socket.io/?EIO=4&transport=polling';
      const good = await rawRequest(server, 'GET', poll, { Origin: 'http://good.test' });
      assert.equal(good.status, 200);
      assert.equal(good.headers['access-control-allow-origin'], 'http://good.test');
      const evil = await rawRequest(server, 'GET', poll, { Origin: 'http://evil.test' });
      assert.equal(evil.headers['access-control-allow-origin'], undefined, `evil origin must not be allowed: ${show(evil.headers)}`);
      assert.equal(evil.status, 403, `a polling handshake from another origin is refused, not served: ${evil.text}`);
      assert.match(evil.text, /REALTIME_CORS_ORIGIN/, evil.text);

      const pre = { 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'x-api-key,content-type' };
      const okPre = await rawRequest(server, 'OPTIONS', '/api/broadcast', { Origin: 'http://good.test', ...pre });
      assert.ok(okPre.status >= 200 && okPre.status < 300, `preflight → ${okPre.status}`);
      assert.equal(okPre.headers['access-control-allow-origin'], 'http://good.test', show(okPre.headers));
      assert.match(okPre.headers['access-control-allow-methods'] || '', /POST/i, show(okPre.headers));
      assert.match(okPre.headers['access-control-allow-headers'] || '', /x-api-key/i, show(okPre.headers));
      const badPre = await rawRequest(server, 'OPTIONS', '/api/broadcast', { Origin: 'http://evil.test', ...pre });
      assert.equal(badPre.headers['access-control-allow-origin'], undefined, show(badPre.headers));
      const api = await rawRequest(server, 'GET', '/api/rooms', { Origin: 'http://good.test', 'X-API-Key': API_KEY });
      assert.equal(api.status, 200);
      assert.equal(api.headers['access-control-allow-origin'], 'http://good.test', show(api.headers));
      assert.equal(api.headers['access-control-allow-credentials'], 'true', 'credentials for a listed origin');
    });

    it('a WebSocket upgrade from another origin is refused; from the listed origin, or with no Origin (a server), it connects', async () => {
      const evil = await tryConnect(server, uid('evil'), { transports: ['websocket'], extraHeaders: { Origin: 'http://evil.test' } });
      assert.equal(evil.ok, false, 'a websocket from http://evil.test must not connect');
      const upgrade = await rawUpgrade(server, { Origin: 'http://evil.test' });
      assert.equal(upgrade.status, 403, `the upgrade is answered 403, not 101: ${show(upgrade)}`);
      const polled = await tryConnect(server, uid('evilpoll'), { transports: ['polling'], extraHeaders: { Origin: 'http://evil.test' } });
      assert.equal(polled.ok, false, 'polling from http://evil.test must not connect');
      for (const headers of [{ Origin: 'http://good.test' }, {}]) {
        const ok = await tryConnect(server, uid('good'), { transports: ['websocket'], extraHeaders: headers });
        assert.equal(ok.ok, true, `${show(headers)}: ${show(ok.reason)}`);
        ok.c.socket.disconnect();
      }
      assert.equal((await rawUpgrade(server, { Origin: 'http://good.test' })).status, 101);
    });
  });

  describe(`compression on (the default) [${backend.name}]`, { skip: backend.skip }, () => {
    let server;
    before(async () => {
      server = await startServer({ backend: backend.name });
    });
    after(() => shutdown(server));

    it('API and long-polling responses are gzip-compressed when the client accepts it, and only then', async () => {
      for (let i = 0; i < 5; i++) {
        assert.equal((await http(server, 'POST', '/api/rooms', { apiKey: API_KEY, body: { name: uid('padding-room-name-for-a-longer-response') } })).status, 201);
      }
      const gz = await rawRequest(server, 'GET', '/api/rooms', { 'X-API-Key': API_KEY, 'Accept-Encoding': 'gzip' });
      assert.equal(gz.status, 200);
      assert.equal(gz.headers['content-encoding'], 'gzip', `GET /api/rooms with Accept-Encoding: gzip: ${show(gz.headers)}`);
      const plain = await rawRequest(server, 'GET', '/api/rooms', { 'X-API-Key': API_KEY });
      assert.equal(plain.headers['content-encoding'], undefined, show(plain.headers));
      assert.deepEqual(JSON.parse(gz.text), JSON.parse(plain.text), 'the compressed body is the same JSON');
      const poll = await rawRequest(server, 'GET', '/socket.io/?EIO=4&transport=polling', { 'Accept-Encoding': 'gzip' });
      assert.equal(poll.status, 200);
      assert.equal(poll.headers['content-encoding'], 'gzip', `polling handshake with Accept-Encoding: gzip: ${show(poll.headers)}`);
      assert.match(poll.text, /^0\{"sid":"[^"]+"/, `the gunzipped body is an Engine.IO open packet: ${show(poll.text)}`);
    });
  });

  describe(`feature flags off (presence, typing, compression, per-user rate limit, audit log) [${backend.name}]`, { skip: backend.skip }, () => {
    let server;
    before(async () => {
      server = await startServer({
        backend: backend.name,
        env: {
          REALTIME_ENABLE_PRESENCE: 'false', REALTIME_ENABLE_TYPING: 'false', REALTIME_ENABLE_COMPRESSION: 'false',
          REALTIME_RATE_LIMIT_ENABLED: 'false', REALTIME_RATE_LIMIT_POINTS: '3', REALTIME_LOG_EVENTS: 'false',
        },
      });
    });
    after(() => shutdown(server));

    it('presence:update and typing are FORBIDDEN (over HTTP too); subscriptions and presence:get still work', async () => {
      const room = uid('flags');
      const alice = uid('alice');
      const a = await connectClient(server, { user: alice });
      const b = await connectClient(server, { user: uid('bob') });
      await join(a.socket, room);
      await join(b.socket, room);
      assertErr(await emitAck(a.socket, 'presence:update', { status: 'away' }), 'FORBIDDEN', 'presence:update with presence off');
      assertErr(await emitAck(a.socket, 'typing:start', { roomName: room, roomType: 'channel' }), 'FORBIDDEN', 'typing:start with typing off');
      const typing = await http(server, 'POST', '/typing', { headers: { Authorization: `Bearer ${mintToken(alice)}` }, body: { channelId: room, roomType: 'channel', isTyping: true } });
      assert.equal(typing.status, 403, show(typing.body));
      assert.equal(typing.body.error.code, 'FORBIDDEN', show(typing.body));
      // connection-driven presence still works
      const sub = assertOk(await emitAck(b.socket, 'presence:subscribe', { userIds: [alice] }), 'presence:subscribe');
      assert.equal(sub.presences.length, 1, show(sub));
      await eventually('alice to read as online', async () => {
        const got = assertOk(await emitAck(b.socket, 'presence:get', { userIds: [alice] }), 'presence:get');
        return got.presences[0].status === 'online';
      });
      a.socket.disconnect();
      b.socket.disconnect();
    });

    it('REALTIME_RATE_LIMIT_ENABLED=false: events beyond REALTIME_RATE_LIMIT_POINTS are not refused', async () => {
      const { socket } = await connectClient(server, { user: uid('busy') });
      for (let i = 0; i < 10; i++) assertOk(await emitAck(socket, 'room:join', { roomName: uid(`r${i}`) }), `join #${i + 1} of 10 with 3 points`);
      socket.disconnect();
    });

    it('REALTIME_ENABLE_COMPRESSION=false: no gzip even when the client asks; REALTIME_LOG_EVENTS=false: no audit rows', async () => {
      const gz = await rawRequest(server, 'GET', '/api/rooms', { 'X-API-Key': API_KEY, 'Accept-Encoding': 'gzip' });
      assert.equal(gz.status, 200);
      assert.equal(gz.headers['content-encoding'], undefined, show(gz.headers));
      const u = uid('unlogged');
      const { socket } = await connectClient(server, { user: u });
      socket.disconnect();
      await eventually('the connection to be gone', async () => {
        const list = listOf((await http(server, 'GET', '/api/connections', { apiKey: API_KEY })).body, 'connections');
        return !list.some((c) => c.userId === u);
      });
      await sleep(1500); // audit rows are written within about 250 ms when logging is on
      const events = listOf((await http(server, 'GET', '/api/events?limit=1000', { apiKey: API_KEY })).body, 'events');
      assert.deepEqual(events, [], `no audit events with REALTIME_LOG_EVENTS=false: ${show(events)}`);
    });
  });
}
