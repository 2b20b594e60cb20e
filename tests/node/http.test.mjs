// CONTRACT §10: /health, /metrics, broadcast API, admin API (rooms, connections), API-key auth.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, shutdown, connectClient, emitAck, waitFor, expectNoEvent, waitDisconnect, assertOk, assertErr, show, uid, join,
  http, listOf, API_KEY, sleep, ISO_MS,
} from './harness.mjs';

/** Sum the samples of a metric family (all label sets) in Prometheus text. */
function metricValue(text, name) {
  let sum = 0;
  let found = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/);
    if (m && m[1] === name) {
      found = true;
      sum += Number(m[3]);
    }
  }
  return found ? sum : null;
}

/** CONTRACT §1: timestamps on the wire are ISO-8601 UTC strings with milliseconds. */
function assertIsoTimestamps(entries, what) {
  for (const e of entries) {
    for (const [k, v] of Object.entries(e)) {
      if (!/At$/.test(k) || v === null || v === undefined) continue;
      assert.ok(typeof v === 'string' && ISO_MS.test(v), `${what}: field ${k} must be an ISO-8601 string with ms, got ${show(v)} in ${show(e)}`);
    }
  }
}

describe('HTTP API', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(() => shutdown(server));

  it('GET /health → the contract shape', async () => {
    const { socket } = await connectClient(server, { user: uid('h') });
    const res = await http(server, 'GET', '/health');
    assert.equal(res.status, 200, res.text);
    const b = res.body;
    assert.equal(b.status, 'healthy', show(b));
    assert.equal(b.service, 'realtime', show(b));
    assert.ok(typeof b.version === 'string' && b.version.length > 0, `version: ${show(b)}`);
    assert.ok(typeof b.uptime === 'number' && b.uptime >= 0, `uptime: ${show(b)}`);
    assert.equal(b.websocket?.running, true, `websocket.running: ${show(b)}`);
    assert.ok(Number.isInteger(b.websocket?.connections) && b.websocket.connections >= 1, `websocket.connections with a client connected: ${show(b)}`);
    const db = b.dependencies?.database;
    assert.ok(db && typeof db.status === 'string' && db.status.length > 0, `dependencies.database.status: ${show(b)}`);
    assert.ok(typeof db.latency === 'number' && db.latency >= 0, `dependencies.database.latency: ${show(b)}`);
    assert.ok(b.dependencies.redis === undefined, `no redis configured → no redis dependency: ${show(b)}`);
    assert.match(res.headers.get('content-type') || '', /application\/json/);
    socket.disconnect();
  });

  it('GET /metrics → Prometheus text with the contract metrics; counters move', async () => {
    const res = await http(server, 'GET', '/metrics');
    assert.equal(res.status, 200, res.text.slice(0, 500));
    const t = res.text;
    assert.ok(metricValue(t, 'realtime_connections') !== null, `realtime_connections missing:\n${t.slice(0, 3000)}`);
    assert.ok(metricValue(t, 'realtime_messages_total') !== null, `realtime_messages_total missing:\n${t.slice(0, 3000)}`);
    assert.ok(/^realtime_latency_ms_bucket\{[^}]*le="[^"]+"[^}]*\}\s+\S+/m.test(t), `realtime_latency_ms histogram buckets missing:\n${t.slice(0, 3000)}`);
    assert.ok(/^realtime_latency_ms_bucket\{[^}]*le="\+Inf"[^}]*\}/m.test(t), 'realtime_latency_ms needs a +Inf bucket');
    assert.ok(metricValue(t, 'realtime_latency_ms_count') !== null, 'realtime_latency_ms_count missing');
    assert.ok(metricValue(t, 'realtime_latency_ms_sum') !== null, 'realtime_latency_ms_sum missing');
    const rss = metricValue(t, 'process_resident_memory_bytes');
    assert.ok(rss !== null && rss > 1_000_000, `process_resident_memory_bytes: ${rss}`);

    const msgsBefore = metricValue(t, 'realtime_messages_total');
    const a = await connectClient(server, { user: uid('m1') });
    const b = await connectClient(server, { user: uid('m2') });
    const room = uid('metrics');
    await join(a.socket, room);
    await join(b.socket, room);
    const got = waitFor(b.socket, 'message:new');
    assertOk(await emitAck(a.socket, 'message:send', { roomName: room, content: 'count me' }), 'send');
    await got;
    await sleep(200);
    const t2 = (await http(server, 'GET', '/metrics')).text;
    assert.ok(metricValue(t2, 'realtime_messages_total') >= msgsBefore + 1, `realtime_messages_total should grow: before=${msgsBefore} after=${metricValue(t2, 'realtime_messages_total')}`);
    assert.ok(metricValue(t2, 'realtime_connections') >= 2, `realtime_connections with 2 clients: ${metricValue(t2, 'realtime_connections')}`);
    a.socket.disconnect();
    b.socket.disconnect();
  });

  it('POST /api/broadcast (X-API-Key) → {recipientCount}; clients get `eventType` with `payload` as given', async () => {
    const room = uid('bc');
    const c1 = await connectClient(server, { user: uid('r1') });
    const c2 = await connectClient(server, { user: uid('r2') });
    const out = await connectClient(server, { user: uid('out') });
    await join(c1.socket, room);
    await join(c2.socket, room);
    const payload = { text: 'hello', nested: { list: [1, 'two', null], flag: true }, n: 3.5 };
    const p1 = waitFor(c1.socket, 'notification:new');
    const p2 = waitFor(c2.socket, 'notification:new');
    const res = await http(server, 'POST', '/api/broadcast', { apiKey: API_KEY, body: { eventType: 'notification:new', rooms: [room], payload } });
    assert.equal(res.status, 200, `POST /api/broadcast → ${res.status} ${show(res.body)}`);
    assert.equal(res.body.recipientCount, 2, `recipientCount: ${show(res.body)}`);
    assert.deepEqual(await p1, payload);
    assert.deepEqual(await p2, payload);
    await expectNoEvent(out.socket, 'notification:new', 300);

    // Authorization: Bearer <key> works as well; to a user room (all of that user's sockets)
    const u = uid('multi');
    const d1 = await connectClient(server, { user: u });
    const d2 = await connectClient(server, { user: u });
    const q1 = waitFor(d1.socket, 'mention:new');
    const q2 = waitFor(d2.socket, 'mention:new');
    const res2 = await http(server, 'POST', '/api/broadcast', {
      headers: { Authorization: `Bearer ${API_KEY}` }, body: { eventType: 'mention:new', rooms: [`user:${u}`], payload: { m: 1 } },
    });
    assert.equal(res2.status, 200, show(res2.body));
    assert.equal(res2.body.recipientCount, 2, show(res2.body));
    await q1;
    await q2;

    // another account reaches nobody here
    const res3 = await http(server, 'POST', '/api/broadcast', { apiKey: API_KEY, app: 'other-app', body: { eventType: 'notification:new', rooms: [room], payload } });
    assert.equal(res3.status, 200, show(res3.body));
    assert.equal(res3.body.recipientCount, 0, `X-App-Name other-app must not reach primary sockets: ${show(res3.body)}`);
    for (const c of [c1, c2, out, d1, d2]) c.socket.disconnect();
  });

  it('broadcast / admin without or with a wrong key → 401 {error:{code,message}}', async () => {
    for (const [method, p, body] of [
      ['POST', '/api/broadcast', { eventType: 'x', rooms: ['general'], payload: {} }],
      ['POST', '/api/broadcast/batch', { events: [] }],
      ['GET', '/api/rooms'],
      ['GET', '/api/connections'],
      ['GET', '/api/stats'],
    ]) {
      const r1 = await http(server, method, p, { body });
      assert.equal(r1.status, 401, `${method} ${p} without key → ${r1.status} ${show(r1.body)}`);
      assert.equal(r1.body?.error?.code, 'UNAUTHENTICATED', `${method} ${p} 401 body: ${show(r1.body)}`);
      assert.equal(typeof r1.body?.error?.message, 'string', show(r1.body));
      const r2 = await http(server, method, p, { body, apiKey: 'wrong-key' });
      assert.equal(r2.status, 401, `${method} ${p} with a wrong key → ${r2.status} ${show(r2.body)}`);
    }
  });

  it('POST /api/broadcast with a bad body → 400/422 JSON {error:{code:VALIDATION_ERROR}}', async () => {
    for (const body of [{}, { eventType: 'x' }, { eventType: 42, rooms: ['general'], payload: {} }, 'not json']) {
      const r = await http(server, 'POST', '/api/broadcast', { apiKey: API_KEY, body });
      assert.ok(r.status === 400 || r.status === 422, `POST /api/broadcast ${show(body)} → ${r.status} ${show(r.body)}`);
      assert.equal(r.body?.error?.code, 'VALIDATION_ERROR', `body: ${show(r.body)}`);
    }
  });

  it('POST /api/broadcast/batch → {results:[{recipientCount}], total}', async () => {
    const r1 = uid('b1');
    const r2 = uid('b2');
    const x = await connectClient(server, { user: uid('x') });
    const y = await connectClient(server, { user: uid('y') });
    const z = await connectClient(server, { user: uid('z') });
    await join(x.socket, r1);
    await join(y.socket, r2);
    await join(z.socket, r2);
    const gx = waitFor(x.socket, 'batch:one', (p) => p && p.i === 1);
    const gy = waitFor(y.socket, 'batch:two', (p) => p && p.i === 2);
    const gz = waitFor(z.socket, 'batch:two', (p) => p && p.i === 2);
    const res = await http(server, 'POST', '/api/broadcast/batch', {
      apiKey: API_KEY,
      body: {
        events: [
          { eventType: 'batch:one', roomNames: [r1], payload: { i: 1 } },
          { eventType: 'batch:two', roomNames: [r2], payload: { i: 2 }, timestamp: new Date().toISOString() },
        ],
      },
    });
    assert.equal(res.status, 200, show(res.body));
    assert.ok(Array.isArray(res.body.results) && res.body.results.length === 2, show(res.body));
    assert.equal(res.body.results[0].recipientCount, 1, show(res.body));
    assert.equal(res.body.results[1].recipientCount, 2, show(res.body));
    assert.equal(res.body.total, 3, `total: ${show(res.body)}`);
    assert.deepEqual(await gx, { i: 1 });
    await gy;
    await gz;
    for (const c of [x, y, z]) c.socket.disconnect();
  });

  it('admin rooms: POST /api/rooms (201), GET /api/rooms lists it, GET /api/rooms/:name', async () => {
    const name = uid('adminroom');
    const res = await http(server, 'POST', '/api/rooms', { apiKey: API_KEY, body: { name, visibility: 'public', maxMembers: 50 } });
    assert.equal(res.status, 201, `POST /api/rooms → ${res.status} ${show(res.body)}`);
    const list = await http(server, 'GET', '/api/rooms', { apiKey: API_KEY });
    assert.equal(list.status, 200, show(list.body));
    const rooms = listOf(list.body, 'rooms');
    assert.ok(rooms, `GET /api/rooms should return a list: ${show(list.body)}`);
    assert.ok(rooms.some((r) => r.name === name), `GET /api/rooms lacks ${name}: ${show(list.body)}`);
    const one = await http(server, 'GET', `/api/rooms/${encodeURIComponent(name)}`, { apiKey: API_KEY });
    assert.equal(one.status, 200, show(one.body));
    const room = one.body.room ?? one.body;
    assert.equal(room.name, name, show(one.body));
    const missing = await http(server, 'GET', `/api/rooms/${uid('nope')}`, { apiKey: API_KEY });
    assert.equal(missing.status, 404, show(missing.body));
    assert.equal(missing.body?.error?.code, 'ROOM_NOT_FOUND', show(missing.body));

    // the room is joinable by a client (public)
    const { socket } = await connectClient(server, { user: uid('joiner') });
    const d = await join(socket, name);
    assert.equal(d.roomName, name);
    socket.disconnect();

    // another account does not see it
    const other = await http(server, 'GET', '/api/rooms', { apiKey: API_KEY, app: 'someone-else' });
    assert.equal(other.status, 200, show(other.body));
    assert.ok(!(listOf(other.body, 'rooms') || []).some((r) => r.name === name), `rooms leak across accounts: ${show(other.body)}`);
  });

  it('admin members: POST joins the user\'s live sockets, GET lists, DELETE removes the membership', async () => {
    const room = uid('team');
    assert.equal((await http(server, 'POST', '/api/rooms', { apiKey: API_KEY, body: { name: room, visibility: 'private' } })).status, 201);
    const owner = uid('owner');
    const guest = uid('guest');
    const base = `/api/rooms/${encodeURIComponent(room)}/members`;
    assert.ok((await http(server, 'POST', base, { apiKey: API_KEY, body: { userId: owner, role: 'admin' } })).status < 300);
    const o = await connectClient(server, { user: owner });
    const g = await connectClient(server, { user: guest });
    await join(o.socket, room);

    // adding the member puts their live socket into the room: it receives without room:join
    const add = await http(server, 'POST', base, { apiKey: API_KEY, body: { userId: guest } });
    assert.ok(add.status >= 200 && add.status < 300, `POST members → ${add.status} ${show(add.body)}`);
    await sleep(200);
    const c1 = uid('to-guest');
    const got = waitFor(g.socket, 'message:new', (m) => m && m.content === c1);
    assertOk(await emitAck(o.socket, 'message:send', { roomName: room, content: c1 }), 'send');
    await got;

    const list = await http(server, 'GET', base, { apiKey: API_KEY });
    assert.equal(list.status, 200, show(list.body));
    const members = listOf(list.body, 'members');
    assert.ok(members && members.some((m) => m.userId === guest) && members.some((m) => m.userId === owner), `members list: ${show(list.body)}`);

    const del = await http(server, 'DELETE', `${base}/${encodeURIComponent(guest)}`, { apiKey: API_KEY });
    assert.ok(del.status >= 200 && del.status < 300, `DELETE member → ${del.status} ${show(del.body)}`);
    await sleep(200);
    const c2 = uid('after-removal');
    assertOk(await emitAck(o.socket, 'message:send', { roomName: room, content: c2 }), 'send');
    await expectNoEvent(g.socket, 'message:new', 500, (m) => m && m.content === c2);
    assertErr(await emitAck(g.socket, 'message:send', { roomName: room, content: 'still here?' }), ['NOT_A_MEMBER', 'FORBIDDEN'], 'removed member sends');
    o.socket.disconnect();
    g.socket.disconnect();
  });

  it('DELETE /api/rooms/:name removes the room', async () => {
    const name = uid('doomed');
    assert.equal((await http(server, 'POST', '/api/rooms', { apiKey: API_KEY, body: { name } })).status, 201);
    const del = await http(server, 'DELETE', `/api/rooms/${encodeURIComponent(name)}`, { apiKey: API_KEY });
    assert.ok(del.status >= 200 && del.status < 300, `DELETE /api/rooms → ${del.status} ${show(del.body)}`);
    const one = await http(server, 'GET', `/api/rooms/${encodeURIComponent(name)}`, { apiKey: API_KEY });
    assert.equal(one.status, 404, show(one.body));
  });

  it('GET /api/events?limit= → the audit log, at most `limit` entries', async () => {
    const { socket } = await connectClient(server, { user: uid('audited') });
    socket.disconnect();
    await sleep(300);
    const res = await http(server, 'GET', '/api/events?limit=2', { apiKey: API_KEY });
    assert.equal(res.status, 200, show(res.body));
    const events = listOf(res.body, 'events');
    assert.ok(events, `a list of events: ${show(res.body)}`);
    assert.ok(events.length >= 1 && events.length <= 2, `1..2 events with limit=2 after connects/disconnects: ${show(res.body)}`);
  });

  it('admin API timestamps (…At fields) are ISO-8601 strings, as everywhere on the wire', async () => {
    const name = uid('ts-room');
    assert.equal((await http(server, 'POST', '/api/rooms', { apiKey: API_KEY, body: { name } })).status, 201);
    const { socket } = await connectClient(server, { user: uid('ts') });
    await join(socket, name);
    assertOk(await emitAck(socket, 'message:send', { roomName: name, content: 'x' }), 'send');
    const rooms = listOf((await http(server, 'GET', '/api/rooms', { apiKey: API_KEY })).body, 'rooms') || [];
    const one = (await http(server, 'GET', `/api/rooms/${encodeURIComponent(name)}`, { apiKey: API_KEY })).body;
    const members = listOf((await http(server, 'GET', `/api/rooms/${encodeURIComponent(name)}/members`, { apiKey: API_KEY })).body, 'members') || [];
    const conns = listOf((await http(server, 'GET', '/api/connections', { apiKey: API_KEY })).body, 'connections') || [];
    const events = listOf((await http(server, 'GET', '/api/events?limit=20', { apiKey: API_KEY })).body, 'events') || [];
    const problems = [];
    const check = (entries, what) => {
      try {
        assertIsoTimestamps(entries, what);
      } catch (e) {
        problems.push(e.message.split('\n')[0].slice(0, 400));
      }
    };
    check(rooms, 'GET /api/rooms');
    check([one.room ?? one], 'GET /api/rooms/:name');
    check(members, 'GET /api/rooms/:name/members');
    check(conns, 'GET /api/connections');
    check(events, 'GET /api/events');
    assert.deepEqual(problems, []);
    socket.disconnect();
  });

  it('GET /api/stats → counts', async () => {
    const res = await http(server, 'GET', '/api/stats', { apiKey: API_KEY });
    assert.equal(res.status, 200, show(res.body));
    assert.ok(res.body && typeof res.body === 'object', show(res.body));
  });

  it('GET /api/connections lists a live client (with its device); DELETE /api/connections/:socketId disconnects it', async () => {
    const user = uid('victim');
    const victim = await connectClient(server, { user, auth: { device: { type: 'web', os: 'linux', browser: 'chrome-test' } } });
    const bystander = await connectClient(server, { user: uid('bystander') });
    const sid = victim.socket.id;
    const res = await http(server, 'GET', '/api/connections', { apiKey: API_KEY });
    assert.equal(res.status, 200, show(res.body));
    const conns = listOf(res.body, 'connections');
    assert.ok(conns, `GET /api/connections should return a list: ${show(res.body)}`);
    const entry = conns.find((c) => c.socketId === sid || c.id === sid);
    assert.ok(entry, `connection ${sid} not listed: ${show(res.body)}`);
    assert.ok(JSON.stringify(entry).includes(user), `connection entry should name the user: ${show(entry)}`);
    assert.ok(JSON.stringify(entry).includes('chrome-test'), `auth.device should be recorded with the connection: ${show(entry)}`);

    const gone = waitDisconnect(victim.socket, 5000);
    const del = await http(server, 'DELETE', `/api/connections/${encodeURIComponent(sid)}`, { apiKey: API_KEY });
    assert.ok(del.status >= 200 && del.status < 300, `DELETE /api/connections/${sid} → ${del.status} ${show(del.body)}`);
    await gone;
    assert.ok(bystander.socket.connected, 'other clients stay connected');
    await sleep(300);
    const after = await http(server, 'GET', '/api/connections', { apiKey: API_KEY });
    const still = (listOf(after.body, 'connections') || []).find((c) => (c.socketId === sid || c.id === sid));
    assert.ok(!still || still.connected === false || still.disconnectedAt, `disconnected socket still listed as live: ${show(still)}`);
    bystander.socket.disconnect();
  });
});

describe('HTTP API without REALTIME_API_KEY', () => {
  let server;
  before(async () => {
    server = await startServer({ env: { REALTIME_API_KEY: undefined } });
  });
  after(() => shutdown(server));

  it('admin/broadcast routes → 403 naming REALTIME_API_KEY', async () => {
    const r = await http(server, 'GET', '/api/rooms', { apiKey: 'anything' });
    assert.equal(r.status, 403, show(r.body));
    assert.ok(r.text.includes('REALTIME_API_KEY'), `403 message should name REALTIME_API_KEY: ${r.text}`);
    const b = await http(server, 'POST', '/api/broadcast', { body: { eventType: 'x', rooms: ['general'], payload: {} } });
    assert.equal(b.status, 403, show(b.body));
  });
});
