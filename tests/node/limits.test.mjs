// CONTRACT §1 limits and §4 room policy knobs: REALTIME_MAX_CONNECTIONS, REALTIME_RATE_LIMIT
// (new connections per IP per minute), REALTIME_AUTO_CREATE_ROOMS=false (ROOM_NOT_FOUND).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, shutdown, connectClient, emitAck, waitDisconnect, assertOk, assertErr, show, uid, join, http, API_KEY, sleep,
} from './harness.mjs';

/** Resolves 'ok' when the client authenticates, else the reason it did not. */
async function tryConnect(server, user) {
  try {
    const c = await connectClient(server, { user });
    return { ok: true, c };
  } catch (e) {
    return { ok: false, reason: e.message };
  }
}

describe('REALTIME_MAX_CONNECTIONS=2', () => {
  let server;
  before(async () => {
    server = await startServer({ env: { REALTIME_MAX_CONNECTIONS: '2' } });
  });
  after(() => shutdown(server));

  it('a third concurrent connection is refused; a slot frees up when one leaves', async () => {
    const a = await connectClient(server, { user: uid('a') });
    const b = await connectClient(server, { user: uid('b') });
    const third = await tryConnect(server, uid('c'));
    assert.equal(third.ok, false, 'the third connection must not be admitted');
    assert.ok(a.socket.connected && b.socket.connected, 'the admitted clients stay connected');
    const gone = waitDisconnect(a.socket);
    a.socket.disconnect();
    await gone;
    await sleep(300);
    const again = await tryConnect(server, uid('d'));
    assert.equal(again.ok, true, `after a disconnect a new connection is admitted: ${again.reason}`);
    again.c.socket.disconnect();
    b.socket.disconnect();
  });

  it('a burst of simultaneous handshakes admits no more than the limit', async () => {
    await sleep(300); // the previous test's sockets are gone
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => tryConnect(server, uid(`burst${i}`))));
    const admitted = results.filter((r) => r.ok);
    assert.ok(admitted.length <= 2, `admitted ${admitted.length} of 8 with REALTIME_MAX_CONNECTIONS=2`);
    assert.ok(admitted.length >= 1, 'at least one is admitted');
    for (const r of admitted) r.c.socket.disconnect();
  });
});

describe('REALTIME_RATE_LIMIT=3 (new connections per IP per minute)', () => {
  let server;
  before(async () => {
    server = await startServer({ env: { REALTIME_RATE_LIMIT: '3' } });
  });
  after(() => shutdown(server));

  it('the 4th connection within a minute from one IP is refused', async () => {
    const results = [];
    for (let i = 0; i < 5; i++) {
      const r = await tryConnect(server, uid(`c${i}`));
      results.push(r);
      if (r.ok) r.c.socket.disconnect();
    }
    const admitted = results.filter((r) => r.ok).length;
    assert.ok(results[0].ok && results[1].ok && results[2].ok, `the first 3 are admitted: ${show(results.map((r) => r.ok || r.reason))}`);
    assert.equal(admitted, 3, `exactly 3 of 5 admitted: ${show(results.map((r) => r.ok || r.reason))}`);
    const h = await http(server, 'GET', '/health');
    assert.equal(h.status, 200, 'HTTP is not affected');
  });
});

describe('REALTIME_AUTO_CREATE_ROOMS=false', () => {
  let server;
  before(async () => {
    server = await startServer({ env: { REALTIME_AUTO_CREATE_ROOMS: 'false' } });
  });
  after(() => shutdown(server));

  it('joining a room that does not exist → ROOM_NOT_FOUND; an admin-created room is joinable', async () => {
    const { socket } = await connectClient(server, { user: uid('u') });
    assertErr(await emitAck(socket, 'room:join', { roomName: uid('nowhere') }), 'ROOM_NOT_FOUND', 'room:join of a missing room');
    const name = uid('made');
    const res = await http(server, 'POST', '/api/rooms', { apiKey: API_KEY, body: { name } });
    assert.equal(res.status, 201, show(res.body));
    const d = await join(socket, name);
    assert.equal(d.roomName, name, show(d));
    assertOk(await emitAck(socket, 'message:send', { roomName: name, content: 'hi' }), 'send');
    socket.disconnect();
  });
});

describe('REALTIME_CORS_ORIGIN=http://good.test', () => {
  let server;
  before(async () => {
    server = await startServer({ env: { REALTIME_CORS_ORIGIN: 'http://good.test' } });
  });
  after(() => shutdown(server));

  it('the configured origin is allowed, another is not', async () => {
    const path = '/socket.io/?EIO=4&transport=polling';
    const good = await fetch(`${server.url}${path}`, { headers: { Origin: 'http://good.test' } });
    await good.text();
    assert.equal(good.headers.get('access-control-allow-origin'), 'http://good.test');
    const evil = await fetch(`${server.url}${path}`, { headers: { Origin: 'http://evil.test' } });
    await evil.text();
    const acao = evil.headers.get('access-control-allow-origin');
    assert.ok(acao !== '*' && acao !== 'http://evil.test', `evil origin must not be allowed, got Access-Control-Allow-Origin: ${acao}`);
  });
});
