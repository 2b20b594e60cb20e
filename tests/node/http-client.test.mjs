// docs/protocol.md §11 second wave: HTTP routes for clients without a socket — POST /messages, GET /poll,
// GET|POST /presence/:channelId, POST /typing — seen by socket.io-client users in the same rooms.
import assert from 'node:assert/strict';
import {
  describe, it, before, after, backends, noteSkips, emitAck, assertOk, assertErr, eventually, startServer, shutdown, connectClient, waitFor, expectNoEvent, show, uid, join, http, mintToken, API_KEY, sleep,
} from './harness.mjs';

const bearer = (user) => ({ Authorization: `Bearer ${mintToken(user)}` });

noteSkips();

for (const backend of backends()) {
describe(`HTTP routes for clients without a socket [${backend.name}]`, { skip: backend.skip }, () => {
  let server;
  before(async () => {
    // An HTTP presence lasts 3/4 of REALTIME_PRESENCE_TIMEOUT (here 4.5 s): long enough that its "online" is
    // announced before it ends even when a loaded machine delays the server's 400 ms coalescing timer.
    server = await startServer({ backend: backend.name, env: { REALTIME_PRESENCE_OFFLINE_GRACE: '300', REALTIME_PRESENCE_TIMEOUT: '6000' } });
  });
  after(() => shutdown(server));

  it('POST /messages stores and broadcasts like message:send; GET /poll returns it; retries are idempotent', async () => {
    const channelId = uid('chan');
    const alice = uid('alice');
    const b = await connectClient(server, { user: uid('bob') });
    await join(b.socket, `channel:${channelId}`);
    const a = await connectClient(server, { user: alice });
    await join(a.socket, `channel:${channelId}`); // makes alice a member
    a.socket.disconnect();

    const got = waitFor(b.socket, 'message:new', (m) => m && m.content === 'over http');
    const body = { channelId, content: 'over http', clientMessageId: uid('c') };
    const res = await http(server, 'POST', '/messages', { headers: bearer(alice), body });
    assert.equal(res.status, 201, show(res.body));
    assert.equal(typeof res.body.messageId, 'string', show(res.body));
    assert.ok(Number.isInteger(res.body.seq), show(res.body));
    const m = await got;
    assert.equal(m.userId, alice, show(m));
    assert.equal(m.channelId, channelId, show(m));
    assert.equal(m.userName, `User ${alice}`, `userName from the token's name claim: ${show(m)}`);

    const again = await http(server, 'POST', '/messages', { headers: bearer(alice), body });
    assert.equal(again.status, 200, show(again.body));
    assert.equal(again.body.messageId, res.body.messageId, 'the same clientMessageId is the same message');
    assert.equal(again.body.duplicate, true, show(again.body));
    await expectNoEvent(b.socket, 'message:new', 500, (x) => x && x.id === res.body.messageId, { from: b.socket.received.length });

    const poll = await http(server, 'GET', `/poll?channelId=${channelId}&since=0`, { headers: bearer(alice) });
    assert.equal(poll.status, 200, show(poll.body));
    assert.deepEqual(poll.body.messages.map((x) => x.id), [res.body.messageId], show(poll.body));
    assert.ok(Number.isInteger(poll.body.serverTime), show(poll.body));
    const later = await http(server, 'GET', `/poll?channelId=${channelId}&since=${poll.body.serverTime}`, { headers: bearer(alice) });
    assert.deepEqual(later.body.messages, [], `nothing new since serverTime: ${show(later.body)}`);
    b.socket.disconnect();
  });

  it('a backend with the API key acts for a named user; a token cannot act for someone else', async () => {
    const channelId = uid('chan');
    const carol = uid('carol');
    const c = await connectClient(server, { user: carol });
    await join(c.socket, `channel:${channelId}`);
    c.socket.disconnect();

    const viaKey = await http(server, 'POST', '/messages', { apiKey: API_KEY, body: { channelId, userId: carol, content: 'from the backend' } });
    assert.equal(viaKey.status, 201, show(viaKey.body));
    const noUser = await http(server, 'POST', '/messages', { apiKey: API_KEY, body: { channelId, content: 'whose?' } });
    assert.equal(noUser.status, 400, show(noUser.body));
    assert.equal(noUser.body.error.code, 'VALIDATION_ERROR', show(noUser.body));

    const mallory = uid('mallory');
    const spoof = await http(server, 'POST', '/messages', { headers: bearer(mallory), body: { channelId, userId: carol, content: 'spoof' } });
    assert.equal(spoof.status, 403, show(spoof.body));
    assert.equal(spoof.body.error.code, 'FORBIDDEN', show(spoof.body));
    const outsider = await http(server, 'POST', '/messages', { headers: bearer(mallory), body: { channelId, content: 'not a member' } });
    assert.equal(outsider.status, 403, show(outsider.body));
    assert.equal(outsider.body.error.code, 'NOT_A_MEMBER', show(outsider.body));
    const pollOutsider = await http(server, 'GET', `/poll?channelId=${channelId}`, { headers: bearer(mallory) });
    assert.equal(pollOutsider.status, 403, show(pollOutsider.body));
    assert.equal(pollOutsider.body.error.code, 'NOT_A_MEMBER', show(pollOutsider.body));

    for (const [what, headers] of [['no token', {}], ['a bad token', { Authorization: 'Bearer nope' }], ['a wrong API key', { 'X-API-Key': 'wrong' }]]) {
      const r = await http(server, 'POST', '/messages', { headers, body: { channelId, content: 'x' } });
      assert.equal(r.status, 401, `${what}: ${show(r.body)}`);
      assert.equal(r.body.error.code, 'UNAUTHENTICATED', `${what}: ${show(r.body)}`);
    }
    const bad = await http(server, 'POST', '/messages', { headers: bearer(carol), body: { channelId, content: 42 } });
    assert.equal(bad.status, 400, show(bad.body));
    assert.equal(bad.body.error.code, 'VALIDATION_ERROR', show(bad.body));
    const badQuery = await http(server, 'GET', `/poll?channelId=${channelId}&since=yesterday`, { headers: bearer(carol) });
    assert.equal(badQuery.status, 400, show(badQuery.text));
    assert.equal(badQuery.body.error.code, 'VALIDATION_ERROR', show(badQuery.text));
    const huge = await http(server, 'POST', '/messages', { headers: bearer(carol), body: { channelId, content: 'x'.repeat(3 * 1024 * 1024) } });
    assert.equal(huge.status, 413, show(huge.text));
    assert.equal(huge.body.error.code, 'PAYLOAD_TOO_LARGE', show(huge.text));
  });

  it('POST /presence/:channelId makes an HTTP-only user online to room-mates, then offline after REALTIME_PRESENCE_TIMEOUT; GET lists the room', async () => {
    const channelId = uid('chan');
    const dave = uid('dave');
    const d = await connectClient(server, { user: dave });
    await join(d.socket, `channel:${channelId}`);
    d.socket.disconnect();
    const e = await connectClient(server, { user: uid('erin') });
    await join(e.socket, `channel:${channelId}`);
    // dave's socket session is over (grace included) before his HTTP presence starts
    await eventually('dave to be offline after his socket left', async () => {
      const r = await http(server, 'GET', `/api/users/${encodeURIComponent(dave)}/presence`, { apiKey: API_KEY });
      return r.body.connected === false && r.body.presence.status === 'offline';
    });

    const online = waitFor(e.socket, 'presence:changed', (p) => p && p.userId === dave && p.status === 'online', 20_000);
    const post = await http(server, 'POST', `/presence/${channelId}`, { headers: bearer(dave), body: { status: 'online' } });
    assert.equal(post.status, 200, show(post.body));
    await online;

    // answers show the published state (what presence:changed announced): erin's own may still be pending
    const list = await eventually('GET /presence to count dave and erin online', async () => {
      const r = await http(server, 'GET', `/presence/${channelId}`, { headers: bearer(e.authenticated.userId) });
      assert.equal(r.status, 200, show(r.body));
      return r.body.count.online === 2 ? r : null;
    });
    const mine = list.body.users.find((u) => u.userId === dave);
    assert.equal(mine && mine.status, 'online', show(list.body));
    assert.equal(list.body.count.online, 2, `dave over HTTP and erin's socket: ${show(list.body)}`);
    const viaKey = await http(server, 'GET', `/presence/${channelId}`, { apiKey: API_KEY });
    assert.equal(viaKey.status, 200, show(viaKey.body));
    assert.equal(viaKey.body.roomName, `channel:${channelId}`, show(viaKey.body));
    assert.deepEqual(viaKey.body.users.map((u) => u.userId).sort(), [dave, e.authenticated.userId].sort(), show(viaKey.body));

    const bad = await http(server, 'POST', `/presence/${channelId}`, { headers: bearer(dave), body: { status: 'x'.repeat(10_000) } });
    assert.equal(bad.status, 400, `an unknown status word is a VALIDATION_ERROR: ${show(bad.body)}`);
    assert.equal(bad.body.error.code, 'VALIDATION_ERROR', show(bad.body));

    const offline = waitFor(e.socket, 'presence:changed', (p) => p && p.userId === dave && p.status === 'offline', 4500 + 300 + 20_000);
    await offline;
    const outsider = await http(server, 'GET', `/presence/${channelId}`, { headers: bearer(uid('stranger')) });
    assert.equal(outsider.status, 403, show(outsider.body));
    assert.equal(outsider.body.error.code, 'NOT_A_MEMBER', show(outsider.body));
    const ban = await http(server, 'POST', `/api/rooms/${encodeURIComponent(`channel:${channelId}`)}/members`, { apiKey: API_KEY, body: { userId: dave, banned: true } });
    assert.ok(ban.status < 300, show(ban.body));
    const banned = await http(server, 'GET', `/presence/${channelId}`, { headers: bearer(dave) });
    assert.equal(banned.status, 403, `a banned member reads no presence: ${show(banned.body)}`);
    assert.equal(banned.body.error.code, 'FORBIDDEN', show(banned.body));
    const listed = await http(server, 'GET', `/presence/${channelId}`, { apiKey: API_KEY });
    assert.ok(!listed.body.users.some((u) => u.userId === dave), `banned members are not listed: ${show(listed.body)}`);
    e.socket.disconnect();
  });

  it('HTTP requests and sockets share one rate budget: exactly REALTIME_RATE_LIMIT_POINTS events pass, counted across both', async () => {
    // 5 points, refilled at 5 per hour: nothing refills while the test runs
    const limited = await startServer({ backend: backend.name, env: { REALTIME_RATE_LIMIT_POINTS: '5', REALTIME_RATE_LIMIT_DURATION: '3600' } });
    try {
      const henry = uid('henry');
      const h = await connectClient(limited, { user: henry });
      await join(h.socket, 'general'); // point 1
      assert.equal((await emitAck(h.socket, 'ping', { timestamp: 1 })).timestamp, 1, 'ping is free');
      assertOk(await emitAck(h.socket, 'presence:get', { userIds: [henry] }), 'point 2');
      const codes = [];
      for (let i = 0; i < 5; i++) {
        const r = await http(limited, 'GET', '/poll?channelId=general', { headers: bearer(henry) });
        codes.push(r.status === 429 ? r.body.error.code : r.status);
      }
      assert.deepEqual(codes, [200, 200, 200, 'RATE_LIMITED', 'RATE_LIMITED'],
        `2 of the 5 points went to the socket, so exactly 3 polls pass: ${show(codes)}`);
      // and the socket is now out of budget too
      assertErr(await emitAck(h.socket, 'presence:get', { userIds: [henry] }), 'RATE_LIMITED', 'the socket after the HTTP requests');
      // another user has a budget of their own
      const other = uid('ida');
      const o = await connectClient(limited, { user: other });
      await join(o.socket, 'general');
      o.socket.disconnect();
      assert.equal((await http(limited, 'GET', '/poll?channelId=general', { headers: bearer(other) })).status, 200);
      h.socket.disconnect();
    } finally {
      await shutdown(limited);
    }
  });

  it('POST /typing reaches the room as typing:event, a stop clears it; a non-member is refused', async () => {
    const channelId = uid('chan');
    const frank = uid('frank');
    const f = await connectClient(server, { user: frank });
    await join(f.socket, `channel:${channelId}`);
    f.socket.disconnect();
    const g = await connectClient(server, { user: uid('gina') });
    await join(g.socket, `channel:${channelId}`);

    const typing = waitFor(g.socket, 'typing:event', (t) => t && t.users.some((u) => u.userId === frank));
    const res = await http(server, 'POST', '/typing', { headers: bearer(frank), body: { channelId, isTyping: true } });
    assert.equal(res.status, 200, show(res.body));
    const ev = await typing;
    assert.equal(ev.roomName, channelId, show(ev));
    const stopped = waitFor(g.socket, 'typing:event', (t) => t && t.users.length === 0);
    assert.equal((await http(server, 'POST', '/typing', { headers: bearer(frank), body: { channelId, isTyping: false } })).status, 200);
    await stopped;

    const no = await http(server, 'POST', '/typing', { headers: bearer(uid('outsider')), body: { channelId, isTyping: true } });
    assert.equal(no.status, 403, show(no.body));
    assert.equal(no.body.error.code, 'NOT_A_MEMBER', show(no.body));
    const invalid = await http(server, 'POST', '/typing', { headers: bearer(frank), body: { channelId } });
    assert.equal(invalid.status, 400, show(invalid.body));
    g.socket.disconnect();
  });
});
}
