// docs/protocol.md §1: account isolation (auth.sourceAccountId, X-App-Name, ?app=) and both transports
// (websocket, long-polling, polling→websocket upgrade) interoperating.
import assert from 'node:assert/strict';
import {
  describe, it, before, after, backends, noteSkips, eventually, startServer, shutdown, connectClient, emitAck, waitFor, expectNoEvent, assertOk, show, uid, join, http, API_KEY, sleep,
} from './harness.mjs';

noteSkips();

for (const backend of backends()) {
describe(`accounts are isolated [${backend.name}]`, { skip: backend.skip }, () => {
  let server;
  before(async () => {
    server = await startServer({ backend: backend.name });
  });
  after(() => shutdown(server));

  it('two accounts in `general`: messages do not cross; same account does receive', async () => {
    const a = await connectClient(server, { user: uid('alice'), account: 'a1' });
    const a1peer = await connectClient(server, { user: uid('carol'), account: 'a1' });
    const b = await connectClient(server, { user: uid('bob'), account: 'a2' });
    const ja = await join(a.socket, 'general');
    await join(a1peer.socket, 'general');
    const jb = await join(b.socket, 'general');
    assert.equal(jb.memberCount, 1, `a2's general must not count a1's members: a1=${show(ja)} a2=${show(jb)}`);

    const content = uid('a1-only');
    const peerGot = waitFor(a1peer.socket, 'message:new', (m) => m && m.content === content);
    assertOk(await emitAck(a.socket, 'message:send', { roomName: 'general', content }), 'a1 send');
    await peerGot; // positive control: the same account receives it
    await expectNoEvent(b.socket, 'message:new', 800, (m) => m && m.content === content);

    const content2 = uid('a2-only');
    assertOk(await emitAck(b.socket, 'message:send', { roomName: 'general', content: content2 }), 'a2 send');
    await expectNoEvent(a.socket, 'message:new', 800, (m) => m && m.content === content2);

    // history is isolated too
    const s = assertOk(await emitAck(b.socket, 'sync:messages', { channelId: 'general', since: null, limit: 100 }), 'a2 sync');
    assert.ok(!s.messages.some((m) => m.content === content), `a2's sync returned a1's message: ${show(s.messages)}`);
    assert.ok(s.messages.some((m) => m.content === content2), `a2's sync lacks its own message: ${show(s.messages)}`);
    for (const c of [a, a1peer, b]) c.socket.disconnect();
  });

  it('the same user id in two accounts is two identities (user:<id> rooms are per account)', async () => {
    const id = uid('twin');
    const x = await connectClient(server, { user: id, account: 'acct-x' });
    const y = await connectClient(server, { user: id, account: 'acct-y' });
    const room = uid('twin-room');
    await join(x.socket, room);
    const jy = await join(y.socket, room);
    assert.equal(jy.memberCount, 1, `acct-y must not see acct-x's membership: ${show(jy)}`);
    const gotX = waitFor(x.socket, 'notify:test');
    const res = await http(server, 'POST', '/api/broadcast', {
      apiKey: API_KEY, app: 'acct-x', body: { eventType: 'notify:test', rooms: [`user:${id}`], payload: { n: 1 } },
    });
    assert.equal(res.status, 200, show(res.body));
    assert.deepEqual(await gotX, { n: 1 });
    await expectNoEvent(y.socket, 'notify:test', 600);
    assert.equal(res.body.recipientCount, 1, `only acct-x's socket: ${show(res.body)}`);
    x.socket.disconnect();
    y.socket.disconnect();
  });

  it('account from X-App-Name header and ?app= query; names are lowercased and normalized', async () => {
    const room = uid('norm');
    const viaAuth = await connectClient(server, { user: uid('u1'), account: 'My App!' });
    const viaHeader = await connectClient(server, { user: uid('u2'), transports: ['polling'], extraHeaders: { 'X-App-Name': 'my-app-' } });
    const viaQuery = await connectClient(server, { user: uid('u3'), query: { app: 'MY APP?' } });
    const primary = await connectClient(server, { user: uid('u4') });
    for (const c of [viaAuth, viaHeader, viaQuery, primary]) await join(c.socket, room);
    const content = uid('norm-msg');
    const p1 = waitFor(viaHeader.socket, 'message:new', (m) => m && m.content === content);
    const p2 = waitFor(viaQuery.socket, 'message:new', (m) => m && m.content === content);
    assertOk(await emitAck(viaAuth.socket, 'message:send', { roomName: room, content }), 'send');
    await p1;
    await p2;
    await expectNoEvent(primary.socket, 'message:new', 600, (m) => m && m.content === content);
    for (const c of [viaAuth, viaHeader, viaQuery, primary]) c.socket.disconnect();
  });
});

describe(`transports [${backend.name}]`, { skip: backend.skip }, () => {
  let server;
  before(async () => {
    server = await startServer({ backend: backend.name });
  });
  after(() => shutdown(server));

  it('a polling-only client and a websocket client exchange messages', async () => {
    const room = uid('mixed');
    const poll = await connectClient(server, { user: uid('poller'), transports: ['polling'] });
    const ws = await connectClient(server, { user: uid('wsuser'), transports: ['websocket'] });
    assert.equal(poll.socket.io.engine.transport.name, 'polling');
    assert.equal(ws.socket.io.engine.transport.name, 'websocket');
    await join(poll.socket, room);
    await join(ws.socket, room);

    const c1 = uid('from-poll');
    const g1 = waitFor(ws.socket, 'message:new', (m) => m && m.content === c1);
    assertOk(await emitAck(poll.socket, 'message:send', { roomName: room, content: c1 }), 'polling send');
    await g1;
    const c2 = uid('from-ws');
    const g2 = waitFor(poll.socket, 'message:new', (m) => m && m.content === c2);
    assertOk(await emitAck(ws.socket, 'message:send', { roomName: room, content: c2 }), 'websocket send');
    await g2;
    // several messages in a burst reach the polling client in order
    const burst = Array.from({ length: 10 }, (_, i) => `${c2}-${i}`);
    const seen = [];
    poll.socket.on('message:new', (m) => { if (m && burst.includes(m.content)) seen.push(m.content); });
    for (const c of burst) assertOk(await emitAck(ws.socket, 'message:send', { roomName: room, content: c }), 'burst');
    await eventually('the polling client to receive the burst', async () => seen.length >= burst.length || { done: false, seen });
    assert.deepEqual(seen, burst, 'polling client receives the burst in order');
    poll.socket.disconnect();
    ws.socket.disconnect();
  });

  it('the default client (polling, then upgrade to websocket) works', async () => {
    const room = uid('upgrade');
    const up = await connectClient(server, { user: uid('upgrader'), transports: ['polling', 'websocket'] });
    await eventually('the connection to upgrade to websocket', async () => up.socket.io.engine.transport.name === 'websocket', { intervalMs: 50 });
    const other = await connectClient(server, { user: uid('o') });
    await join(up.socket, room);
    await join(other.socket, room);
    const c = uid('after-upgrade');
    const g = waitFor(up.socket, 'message:new', (m) => m && m.content === c);
    assertOk(await emitAck(other.socket, 'message:send', { roomName: room, content: c }), 'send');
    await g;
    up.socket.disconnect();
    other.socket.disconnect();
  });

  it('CORS: any origin is allowed by default, as `*` and never with credentials (auth is by token, not cookie)', async () => {
    const res = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`, { headers: { Origin: 'http://example.test' } });
    assert.equal(res.status, 200, await res.text());
    assert.equal(res.headers.get('access-control-allow-origin'), '*');
    assert.equal(res.headers.get('access-control-allow-credentials'), null, 'no credentials with a wildcard');
    const api = await fetch(`${server.url}/api/stats`, { headers: { Origin: 'http://other.test', 'X-API-Key': API_KEY } });
    assert.equal(api.status, 200);
    assert.equal(api.headers.get('access-control-allow-origin'), '*', 'CORS applies to the HTTP API too');
    assert.equal(api.headers.get('access-control-allow-credentials'), null);
    const pre = await fetch(`${server.url}/api/broadcast`, {
      method: 'OPTIONS',
      headers: { Origin: 'http://evil.test', 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'x-api-key' },
    });
    assert.equal(pre.headers.get('access-control-allow-origin'), '*', 'the preflight is a wildcard too');
    assert.equal(pre.headers.get('access-control-allow-credentials'), null, 'never a reflected origin with credentials');
  });
});
}
