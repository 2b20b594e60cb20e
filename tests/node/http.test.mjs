// docs/protocol.md §11: /health, /metrics, broadcast API, admin API (rooms, connections), API-key auth.
import assert from 'node:assert/strict';
import {
  describe, it, before, after, backends, noteSkips, eventually, startServer, shutdown, connectClient, emitAck, waitFor, expectNoEvent, waitDisconnect, assertOk, assertErr, show, uid, join,
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

/** docs/protocol.md §1: timestamps on the wire are ISO-8601 UTC strings with milliseconds. */
function assertIsoTimestamps(entries, what) {
  for (const e of entries) {
    for (const [k, v] of Object.entries(e)) {
      if (!/At$/.test(k) || v === null || v === undefined) continue;
      assert.ok(typeof v === 'string' && ISO_MS.test(v), `${what}: field ${k} must be an ISO-8601 string with ms, got ${show(v)} in ${show(e)}`);
    }
  }
}

noteSkips();

/** A non-empty list from a 200 admin response. */
async function nonEmptyList(server, p, key) {
  const res = await http(server, 'GET', p, { apiKey: API_KEY });
  assert.equal(res.status, 200, `GET ${p} → ${res.status} ${show(res.body)}`);
  const list = listOf(res.body, key);
  assert.ok(Array.isArray(list) && list.length > 0, `GET ${p}: expected a non-empty ${key} list, got ${show(res.body)}`);
  return list;
}

for (const backend of backends()) {
describe(`HTTP API [${backend.name}]`, { skip: backend.skip }, () => {
  let server;
  before(async () => {
    server = await startServer({ backend: backend.name });
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
    const t2 = await eventually('realtime_messages_total to count the message', async () => {
      const text = (await http(server, 'GET', '/metrics')).text;
      return metricValue(text, 'realtime_messages_total') >= msgsBefore + 1 ? text : null;
    });
    assert.ok(metricValue(t2, 'realtime_connections') >= 2, `realtime_connections with 2 clients: ${metricValue(t2, 'realtime_connections')}`);
    assert.ok(metricValue(t2, 'realtime_latency_ms_count') >= 1, 'the send was measured by realtime_latency_ms');
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
      assert.equal(r.status, 400, `POST /api/broadcast ${show(body)} → ${r.status} ${show(r.body)}`);
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
    assert.equal(add.status, 201, `POST members → ${add.status} ${show(add.body)}`);
    assert.equal(add.body.added, true, show(add.body));
    assert.equal(add.body.member.userId, guest, show(add.body));
    assert.equal(add.body.member.role, 'member', `a new member's role defaults to member: ${show(add.body)}`);
    const c1 = uid('to-guest');
    const got = waitFor(g.socket, 'message:new', (m) => m && m.content === c1);
    assertOk(await emitAck(o.socket, 'message:send', { roomName: room, content: c1 }), 'send');
    await got;

    const list = await http(server, 'GET', base, { apiKey: API_KEY });
    assert.equal(list.status, 200, show(list.body));
    const members = listOf(list.body, 'members');
    assert.ok(members && members.some((m) => m.userId === guest) && members.some((m) => m.userId === owner), `members list: ${show(list.body)}`);

    const del = await http(server, 'DELETE', `${base}/${encodeURIComponent(guest)}`, { apiKey: API_KEY });
    assert.equal(del.status, 200, `DELETE member → ${del.status} ${show(del.body)}`);
    assert.deepEqual(del.body, { removed: guest, roomName: room }, show(del.body));
    const again = await http(server, 'DELETE', `${base}/${encodeURIComponent(guest)}`, { apiKey: API_KEY });
    assert.equal(again.status, 403, `removing a non-member → ${again.status} ${show(again.body)}`);
    assert.equal(again.body?.error?.code, 'NOT_A_MEMBER', show(again.body));
    const c2 = uid('after-removal');
    assertOk(await emitAck(o.socket, 'message:send', { roomName: room, content: c2 }), 'send');
    await expectNoEvent(g.socket, 'message:new', 500, (m) => m && m.content === c2);
    assertErr(await emitAck(g.socket, 'message:send', { roomName: room, content: 'still here?' }), 'NOT_A_MEMBER', 'removed member sends');
    o.socket.disconnect();
    g.socket.disconnect();
  });

  it('DELETE /api/rooms/:name removes the room', async () => {
    const name = uid('doomed');
    assert.equal((await http(server, 'POST', '/api/rooms', { apiKey: API_KEY, body: { name } })).status, 201);
    const del = await http(server, 'DELETE', `/api/rooms/${encodeURIComponent(name)}`, { apiKey: API_KEY });
    assert.equal(del.status, 200, `DELETE /api/rooms → ${del.status} ${show(del.body)}`);
    assert.deepEqual(del.body, { deleted: name }, show(del.body));
    const one = await http(server, 'GET', `/api/rooms/${encodeURIComponent(name)}`, { apiKey: API_KEY });
    assert.equal(one.status, 404, show(one.body));
    assert.equal(one.body?.error?.code, 'ROOM_NOT_FOUND', show(one.body));
    const twice = await http(server, 'DELETE', `/api/rooms/${encodeURIComponent(name)}`, { apiKey: API_KEY });
    assert.equal(twice.status, 404, show(twice.body));
    assert.equal(twice.body?.error?.code, 'ROOM_NOT_FOUND', show(twice.body));
  });

  it('unknown connections, contacts and /api paths → 404 NOT_FOUND', async () => {
    for (const [method, p] of [
      ['DELETE', `/api/connections/${uid('no-such-socket')}`],
      ['DELETE', `/api/users/${uid('u')}/contacts/${uid('nobody')}`],
      ['GET', `/api/${uid('nowhere')}`],
    ]) {
      const r = await http(server, method, p, { apiKey: API_KEY });
      assert.equal(r.status, 404, `${method} ${p} → ${r.status} ${show(r.body)}`);
      assert.equal(r.body?.error?.code, 'NOT_FOUND', `${method} ${p}: ${show(r.body)}`);
    }
  });

  it('GET /api/events?limit= → the audit log, newest first, at most `limit` entries', async () => {
    const user = uid('audited');
    const { socket } = await connectClient(server, { user });
    socket.disconnect();
    // audit rows are written within about 250 ms: wait for both of this user's
    const mine = await eventually('the connect and disconnect audit events of the user', async () => {
      const all = listOf((await http(server, 'GET', '/api/events?limit=1000', { apiKey: API_KEY })).body, 'events') || [];
      const evs = all.filter((e) => e.userId === user);
      return evs.length >= 2 ? evs : null;
    });
    assert.deepEqual(mine.map((e) => e.eventType).sort(), ['connect', 'disconnect'], show(mine));
    const res = await http(server, 'GET', '/api/events?limit=2', { apiKey: API_KEY });
    assert.equal(res.status, 200, show(res.body));
    const events = listOf(res.body, 'events');
    assert.equal(events.length, 2, `exactly limit=2 entries: ${show(res.body)}`);
    assert.ok(Date.parse(events[0].createdAt) >= Date.parse(events[1].createdAt), `newest first: ${show(events)}`);
  });

  it('admin API timestamps (…At fields) are ISO-8601 strings, as everywhere on the wire', async () => {
    const name = uid('ts-room');
    assert.equal((await http(server, 'POST', '/api/rooms', { apiKey: API_KEY, body: { name } })).status, 201);
    const { socket } = await connectClient(server, { user: uid('ts') });
    await join(socket, name);
    assertOk(await emitAck(socket, 'message:send', { roomName: name, content: 'x' }), 'send');
    const rooms = await nonEmptyList(server, '/api/rooms', 'rooms');
    const one = (await http(server, 'GET', `/api/rooms/${encodeURIComponent(name)}`, { apiKey: API_KEY })).body;
    assert.equal(one.room?.name, name, show(one));
    const members = await nonEmptyList(server, `/api/rooms/${encodeURIComponent(name)}/members`, 'members');
    const conns = await nonEmptyList(server, '/api/connections', 'connections');
    const events = await eventually('audit events', () => nonEmptyList(server, '/api/events?limit=20', 'events').catch(() => null));
    // the fields that must be there are there (an absent field would make the ISO check vacuous)
    const room = rooms.find((r) => r.name === name);
    assert.ok(room && typeof room.createdAt === 'string' && typeof room.lastMessageAt === 'string', `room timestamps: ${show(room)}`);
    assert.ok(members.every((m) => typeof m.joinedAt === 'string'), `members[].joinedAt: ${show(members)}`);
    assert.ok(conns.every((c) => typeof c.connectedAt === 'string'), `connections[].connectedAt: ${show(conns)}`);
    assert.ok(events.every((e) => typeof e.createdAt === 'string'), `events[].createdAt: ${show(events)}`);
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

  it('GET /api/stats → counts of the account', async () => {
    const app = uid('stats-app');
    const before = await http(server, 'GET', '/api/stats', { apiKey: API_KEY, app });
    assert.equal(before.status, 200, show(before.body));
    const b = before.body;
    assert.equal(b.account, app, show(b));
    assert.equal(b.database, backend.name, `database: ${show(b)}`);
    for (const k of ['connections', 'connectionsAllAccounts', 'usersOnline', 'rooms', 'messages', 'uptime', 'memoryBytes']) {
      assert.ok(Number.isInteger(b[k]) && b[k] >= 0, `${k} must be a count: ${show(b)}`);
    }
    assert.equal(typeof b.nodeId, 'string', show(b));
    assert.deepEqual(Object.keys(b.presence).sort(), ['away', 'busy', 'offline', 'online'], show(b));
    assert.deepEqual([b.connections, b.usersOnline, b.rooms, b.messages], [0, 0, 0, 0], `a fresh account is empty: ${show(b)}`);

    const u = uid('counted');
    const c1 = await connectClient(server, { user: u, account: app });
    const c2 = await connectClient(server, { user: u, account: app });
    const room = uid('stats-room');
    await join(c1.socket, room);
    assertOk(await emitAck(c1.socket, 'message:send', { roomName: room, content: 'x' }), 'send');
    const after = await eventually('stats to count the user online', async () => {
      const r = (await http(server, 'GET', '/api/stats', { apiKey: API_KEY, app })).body;
      return r.presence.online === 1 ? r : null;
    });
    assert.equal(after.connections, 2, `two sockets: ${show(after)}`);
    assert.equal(after.usersOnline, 1, `one user: ${show(after)}`);
    assert.equal(after.rooms, 1, show(after));
    assert.equal(after.messages, 1, show(after));
    assert.ok(after.connectionsAllAccounts >= 2, show(after));
    c1.socket.disconnect();
    c2.socket.disconnect();
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
    await eventually('the disconnected socket to leave GET /api/connections', async () => {
      const list = listOf((await http(server, 'GET', '/api/connections', { apiKey: API_KEY })).body, 'connections');
      assert.ok(Array.isArray(list), 'a list');
      return list.some((c) => c.socketId === sid) ? null : list;
    }, { timeoutMs: 5000 });
    const again = await http(server, 'DELETE', `/api/connections/${encodeURIComponent(sid)}`, { apiKey: API_KEY });
    assert.equal(again.status, 404, `a gone socket → 404: ${show(again.body)}`);
    assert.equal(again.body?.error?.code, 'NOT_FOUND', show(again.body));
    bystander.socket.disconnect();
  });
});

describe(`API key guessing [${backend.name}]`, { skip: backend.skip }, () => {
  let server;
  before(async () => {
    server = await startServer({ backend: backend.name });
  });
  after(() => shutdown(server));

  it('200 guesses: 10 wrong keys a minute per address, then 429 with Retry-After for every request from it (the right key too); other addresses unaffected; no key logged', async () => {
    const guesses = Array.from({ length: 200 }, (_, i) => `guess-${i}-${uid('k')}`);
    const statuses = [];
    let limited;
    for (const key of guesses) {
      const r = await http(server, 'GET', '/api/stats', { apiKey: key });
      statuses.push(r.status);
      if (r.status === 429) limited = r;
    }
    assert.deepEqual(statuses, [...Array(10).fill(401), ...Array(190).fill(429)], show(statuses));
    assert.equal(limited.body?.error?.code, 'RATE_LIMITED', show(limited.body));
    const retry = Number(limited.headers.get('retry-after'));
    assert.ok(Number.isInteger(retry) && retry >= 1 && retry <= 6, `Retry-After: ${limited.headers.get('retry-after')}`);
    // the right key cannot confirm a guess while the address is refused
    assert.equal((await http(server, 'GET', '/api/stats', { apiKey: API_KEY })).status, 429, 'the right key from the refused address');
    // another client behind the trusted local proxy has its own budget
    const elsewhere = await http(server, 'GET', '/api/stats', { apiKey: API_KEY, headers: { 'X-Forwarded-For': '198.51.100.30' } });
    assert.equal(elsewhere.status, 200, show(elsewhere.body));
    // a missing key is not a guess
    assert.equal((await http(server, 'GET', '/api/stats', { headers: { 'X-Forwarded-For': '198.51.100.31' } })).status, 401);
    // a point refills after Retry-After
    await sleep(retry * 1000 + 200);
    assert.equal((await http(server, 'GET', '/api/stats', { apiKey: API_KEY })).status, 200, 'after Retry-After the right key works');
    const logs = server.logs(1_000_000);
    assert.match(logs, /wrong API key/, 'wrong keys are logged');
    for (const key of [...guesses, API_KEY]) assert.ok(!logs.includes(key), `the key ${key} must not be in the log`);
  });
});

describe(`HTTP API without REALTIME_API_KEY [${backend.name}]`, { skip: backend.skip }, () => {
  let server;
  before(async () => {
    server = await startServer({ backend: backend.name, env: { REALTIME_API_KEY: undefined } });
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
}
