// docs/protocol.md §1, §2: every inbound payload validated — the original's crash inputs get an error and
// the server keeps serving everyone else; unknown events; oversized frames; per-user rate limit.
import assert from 'node:assert/strict';
import {
  describe, it, before, after, backends, noteSkips, startServer, shutdown, connectClient, emitAck, waitFor, waitDisconnect,
  assertOk, assertErr, show, uid, join, http, holdWriteLock, sleep,
} from './harness.mjs';

noteSkips();

for (const backend of backends()) {
describe(`validation and crash inputs [${backend.name}]`, { skip: backend.skip }, () => {
  let server;
  let bystander; // another user's client that must keep working throughout
  let bystander2;
  const room = uid('bystanders');

  before(async () => {
    server = await startServer({ backend: backend.name });
    bystander = await connectClient(server, { user: uid('by1') });
    bystander2 = await connectClient(server, { user: uid('by2') });
    await join(bystander.socket, room);
    await join(bystander2.socket, room);
  });
  after(() => shutdown(server));

  async function stillServing(label) {
    const content = uid(`alive-${label}`);
    const got = waitFor(bystander2.socket, 'message:new', (m) => m && m.content === content);
    assertOk(await emitAck(bystander.socket, 'message:send', { roomName: room, content }), `bystander send after ${label}`);
    await got;
    const h = await http(server, 'GET', '/health');
    assert.equal(h.status, 200, `/health after ${label}: ${h.status} ${show(h.body)}`);
  }

  it('non-object payloads → VALIDATION_ERROR ack (and an `error` event without an ack)', async () => {
    const { socket } = await connectClient(server, { user: uid('bad') });
    for (const payload of ['general', 42, [1, 2, 3], null, true]) {
      assertErr(await emitAck(socket, 'room:join', payload), 'VALIDATION_ERROR', `room:join ${show(payload)}`);
      assertErr(await emitAck(socket, 'message:send', payload), 'VALIDATION_ERROR', `message:send ${show(payload)}`);
    }
    const errP = waitFor(socket, 'error', (e) => e && e.code === 'VALIDATION_ERROR');
    socket.emit('room:join', 'general');
    const e = await errP;
    assert.equal(typeof e.message, 'string', show(e));
    assert.ok(socket.connected, 'the offending socket stays connected');
    socket.disconnect();
    await stillServing('non-object payloads');
  });

  it('a number where a string belongs → VALIDATION_ERROR', async () => {
    const { socket } = await connectClient(server, { user: uid('bad') });
    await join(socket, room);
    assertErr(await emitAck(socket, 'room:join', { roomName: 42 }), 'VALIDATION_ERROR', 'room:join {roomName:42}');
    assertErr(await emitAck(socket, 'message:send', { roomName: room, content: 12345 }), 'VALIDATION_ERROR', 'message:send {content:12345}');
    assertErr(await emitAck(socket, 'message:send', { roomName: 7, content: 'x' }), 'VALIDATION_ERROR', 'message:send {roomName:7}');
    // (ids such as channelId/messageId may legitimately be numbers: clients with numeric ids)
    assertErr(await emitAck(socket, 'sync:messages', { channelId: { id: 5 }, since: null, limit: 10 }), 'VALIDATION_ERROR', 'sync:messages {channelId:{id:5}}');
    assertErr(await emitAck(socket, 'sync:messages', { channelId: room, since: 'yesterday', limit: 10 }), 'VALIDATION_ERROR', "sync:messages {since:'yesterday'}");
    socket.disconnect();
    await stillServing('wrong types');
  });

  it('oversized fields: 10 KB status, 500 KB content, 10 KB room name, 1 MB threadId (PAYLOAD_TOO_LARGE)', async () => {
    const { socket } = await connectClient(server, { user: uid('big') });
    await join(socket, room);
    const status = await emitAck(socket, 'presence:update', { status: 'x'.repeat(10 * 1024) });
    // the status is one of the status words: anything else is a VALIDATION_ERROR, whatever its size
    assertErr(status, 'VALIDATION_ERROR', 'presence:update with a 10 KB status');
    const custom = await emitAck(socket, 'presence:update', { status: 'online', customStatus: { text: 'y'.repeat(257) } });
    assertErr(custom, 'PAYLOAD_TOO_LARGE', 'presence:update with a custom status of 257 characters');
    const content = await emitAck(socket, 'message:send', { roomName: room, content: 'c'.repeat(500 * 1024) }, 10_000);
    assert.deepEqual(assertErr(content, 'PAYLOAD_TOO_LARGE', 'message:send with 500 KB content').details, { field: 'content', max: 16000 });
    const name = await emitAck(socket, 'room:join', { roomName: 'r'.repeat(10 * 1024) });
    assertErr(name, 'PAYLOAD_TOO_LARGE', 'room:join with a 10 KB room name');
    const thread = await emitAck(socket, 'message:send', { roomName: room, content: 'hi', threadId: 't'.repeat(1024 * 1024) }, 10_000);
    assert.deepEqual(assertErr(thread, 'PAYLOAD_TOO_LARGE', 'message:send with a 1 MB threadId').details, { field: 'threadId', max: 256 });
    const mentions = await emitAck(socket, 'message:send', { roomName: room, content: 'hi', mentions: Array.from({ length: 50_000 }, (_, i) => `u${i}`) }, 10_000);
    assert.deepEqual(assertErr(mentions, 'PAYLOAD_TOO_LARGE', 'message:send with 50,000 mentions').details, { field: 'mentions', maxItems: 1000 });
    const atLimit = await emitAck(socket, 'message:send', { roomName: room, content: 'c'.repeat(16000) }, 10_000);
    assertOk(atLimit, 'content of exactly REALTIME_MAX_MESSAGE_LENGTH bytes is accepted');
    assert.ok(socket.connected, 'frames under REALTIME_MAX_PAYLOAD are answered, not disconnected');
    const ping = await emitAck(socket, 'ping', { timestamp: 99 });
    assert.equal(ping?.timestamp, 99, `the same socket still works: ${show(ping)}`);
    socket.disconnect();
    await stillServing('oversized fields');
  });

  it('over long-polling too: a 1 MB threadId → PAYLOAD_TOO_LARGE, the connection stays', async () => {
    const { socket } = await connectClient(server, { user: uid('pollbig'), transports: ['polling'] });
    await join(socket, room);
    const thread = await emitAck(socket, 'message:send', { roomName: room, content: 'hi', threadId: 't'.repeat(1024 * 1024) }, 10_000);
    assertErr(thread, 'PAYLOAD_TOO_LARGE', 'message:send with a 1 MB threadId over polling');
    const ping = await emitAck(socket, 'ping', { timestamp: 5 });
    assert.equal(ping?.timestamp, 5, show(ping));
    socket.disconnect();
    await stillServing('1 MB over polling');
  });

  for (const transport of ['websocket', 'polling']) {
    it(`a frame above REALTIME_MAX_PAYLOAD (3 MB) over ${transport} closes only the offending connection; nothing is stored`, async () => {
      const { socket } = await connectClient(server, { user: uid('huge'), transports: [transport] });
      await join(socket, room);
      const gone = waitDisconnect(socket, 15_000);
      const content = `${uid('huge')}${'z'.repeat(3 * 1024 * 1024)}`;
      socket.emit('message:send', { roomName: room, content });
      await gone;
      await stillServing(`3 MB frame over ${transport}`);
      const hist = assertOk(await emitAck(bystander.socket, 'sync:messages', { roomName: room, since: null, limit: 1000 }), 'sync');
      assert.ok(!hist.messages.some((m) => m.content.length > 1024 * 1024), 'the oversized message was not stored');
    });
  }

  it('deeply nested JSON → VALIDATION_ERROR "payload could not be decoded as JSON"; the socket stays', async () => {
    const { socket } = await connectClient(server, { user: uid('deep') });
    await join(socket, room);
    let nested = {};
    for (let i = 0; i < 1000; i++) nested = { n: nested }; // far beyond serde_json's recursion limit (128)
    for (const [event, payload] of [['message:send', { roomName: room, content: 'deep', metadata: nested }], ['room:join', { roomName: nested }]]) {
      const err = assertErr(await emitAck(socket, event, payload), 'VALIDATION_ERROR', `${event} with JSON nested 1000 deep`);
      assert.equal(err.message, 'payload could not be decoded as JSON', show(err));
    }
    assert.ok(socket.connected, 'bad input never closes the connection');
    socket.disconnect();
    await stillServing('deeply nested JSON');
  });

  it('unknown event: with an ack → UNKNOWN_EVENT ack; without → `error` event UNKNOWN_EVENT', async () => {
    const { socket } = await connectClient(server, { user: uid('unk') });
    assertErr(await emitAck(socket, 'no:such-event', { a: 1 }), 'UNKNOWN_EVENT', 'unknown event with ack');
    const errP = waitFor(socket, 'error', (e) => e && e.code === 'UNKNOWN_EVENT');
    socket.emit('no:such-event', { a: 1 });
    const e = await errP;
    assert.equal(e.message, 'unknown event "no:such-event"', show(e));
    socket.disconnect();
    await stillServing('unknown events');
  });

  it('after all of the above: a fresh client connects, joins, sends; /health answers', async () => {
    const a = await connectClient(server, { user: uid('fresh') });
    await join(a.socket, room);
    const content = uid('fresh-msg');
    const got = waitFor(bystander.socket, 'message:new', (m) => m && m.content === content);
    assertOk(await emitAck(a.socket, 'message:send', { roomName: room, content }), 'fresh send');
    await got;
    const h = await http(server, 'GET', '/health');
    assert.equal(h.status, 200, show(h.body));
    assert.ok(server.proc && !server.exit, `server process still running: exit=${show(server.exit)}`);
    a.socket.disconnect();
  });
});

describe(`per-user rate limit (REALTIME_RATE_LIMIT_POINTS=5 per 3600 s: nothing refills during a test) [${backend.name}]`, { skip: backend.skip }, () => {
  let server;
  before(async () => {
    server = await startServer({ backend: backend.name, env: { REALTIME_RATE_LIMIT_POINTS: '5', REALTIME_RATE_LIMIT_DURATION: '3600' } });
  });
  after(() => shutdown(server));

  it('the 6th+ acked event of a user gets RATE_LIMITED with the contract message; another user is unaffected', async () => {
    const { socket } = await connectClient(server, { user: uid('spammer') });
    const acks = [];
    for (let i = 0; i < 8; i++) acks.push(await emitAck(socket, 'room:join', { roomName: uid(`r${i}`) }));
    for (let i = 0; i < 5; i++) assertOk(acks[i], `event #${i + 1} (within the limit); all acks: ${show(acks)}`);
    for (let i = 5; i < 8; i++) {
      assert.equal(assertErr(acks[i], 'RATE_LIMITED', `event #${i + 1} (over the limit)`).message, 'more than 5 events in 3600 s; slow down');
    }
    const other = await connectClient(server, { user: uid('polite') });
    assertOk(await emitAck(other.socket, 'room:join', { roomName: uid('polite-room') }), 'another user is not limited');
    socket.disconnect();
    other.socket.disconnect();
  });

  it('the budget is shared by all the sockets of a user; ping and pong are exempt', async () => {
    const user = uid('two-devices');
    const d1 = await connectClient(server, { user });
    const d2 = await connectClient(server, { user });
    for (let i = 0; i < 3; i++) assertOk(await emitAck(d1.socket, 'room:join', { roomName: uid('a') }), `device 1 event ${i + 1}`);
    for (let i = 0; i < 2; i++) assertOk(await emitAck(d2.socket, 'room:join', { roomName: uid('b') }), `device 2 event ${i + 1}`);
    assertErr(await emitAck(d2.socket, 'room:join', { roomName: uid('b') }), 'RATE_LIMITED', 'device 2: the 6th event of the user');
    assertErr(await emitAck(d1.socket, 'room:join', { roomName: uid('a') }), 'RATE_LIMITED', 'device 1: the user is out of budget');
    for (let i = 0; i < 20; i++) {
      assert.equal((await emitAck(d1.socket, 'ping', { timestamp: i })).timestamp, i, 'ping is exempt');
      assertOk(await emitAck(d2.socket, 'pong', { timestamp: Date.now() }), 'pong is exempt');
    }
    d1.socket.disconnect();
    d2.socket.disconnect();
  });

  it('a rate-limited message:send with clientMessageId also gets message:failed RATE_LIMITED, retryable', async () => {
    const { socket } = await connectClient(server, { user: uid('spammer2') });
    const room = uid('rl');
    assertOk(await emitAck(socket, 'room:join', { roomName: room }), 'join');
    for (let i = 0; i < 4; i++) assertOk(await emitAck(socket, 'message:send', { roomName: room, content: `m${i}` }), `send ${i + 1}`);
    const cmid = uid('cmid');
    const failedP = waitFor(socket, 'message:failed', (f) => f && f.clientMessageId === cmid);
    const ack = await emitAck(socket, 'message:send', { roomName: room, content: 'over', clientMessageId: cmid });
    assertErr(ack, 'RATE_LIMITED', '6th event: message:send');
    const failed = await failedP;
    assert.equal(failed.errorCode, 'RATE_LIMITED', show(failed));
    assert.equal(failed.retryable, true, `a rate-limited send is retryable: ${show(failed)}`);
    socket.disconnect();
  });
});

describe(`per-user rate limit refill (REALTIME_RATE_LIMIT_POINTS=2 per 2 s) [${backend.name}]`, { skip: backend.skip }, () => {
  let server;
  before(async () => {
    server = await startServer({ backend: backend.name, env: { REALTIME_RATE_LIMIT_POINTS: '2', REALTIME_RATE_LIMIT_DURATION: '2' } });
  });
  after(() => shutdown(server));

  it('an exhausted budget refills continuously: a refused event is admitted again about a second later', async () => {
    const { socket } = await connectClient(server, { user: uid('patient') });
    const join1 = () => emitAck(socket, 'room:join', { roomName: uid('r') });
    // empty the bucket (it refills at one point per second, so a slow machine may need a few more tries)
    let refusedAt = null;
    for (let i = 0; i < 20 && refusedAt === null; i++) {
      const ack = await join1();
      if (ack && ack.success === false) {
        assertErr(ack, 'RATE_LIMITED', 'over the budget');
        refusedAt = Date.now();
      }
    }
    assert.ok(refusedAt !== null, '20 quick events must exhaust a budget of 2');
    // refused events take nothing: poll until one is admitted again
    let admittedAt = null;
    while (admittedAt === null && Date.now() - refusedAt < 10_000) {
      const ack = await join1();
      if (ack && ack.success === true) admittedAt = Date.now();
      else await sleep(100);
    }
    assert.ok(admittedAt !== null, 'the budget must refill (1 point per second) within 10 s');
    assert.ok(admittedAt - refusedAt >= 200, `refilled ${admittedAt - refusedAt} ms after the refusal: too soon for 1 point per second`);
    socket.disconnect();
  });
});

describe(`per-socket queue cap (1024 events waiting) [${backend.name}]`, { skip: backend.skip }, () => {
  let server;
  before(async () => {
    server = await startServer({ backend: backend.name, env: { REALTIME_RATE_LIMIT_POINTS: '100000' } });
  });
  after(() => shutdown(server));

  it('a socket with more than 1024 unhandled events gets RATE_LIMITED "too many events waiting"; the rest are handled, the socket stays', async () => {
    const { socket } = await connectClient(server, { user: uid('flooder') });
    // joins write memberships: with writes held, the first join waits and the following events queue up
    // (SQLite: the server's writer gives up after its busy_timeout of 5 s, so the lock stays well below it)
    const lock = await holdWriteLock(server, { tables: ['np_realtime_rooms', 'np_realtime_room_members'], ms: backend.name === 'postgres' ? 4000 : 2500 });
    // One join that waits for the lock, then typing into that room (memory only once the join is through): the
    // queue fills behind the join, and what it admitted is handled quickly after, even on a loaded machine.
    const roomName = `flood-${uid('q')}`;
    const first = emitAck(socket, 'room:join', { roomName }, 60_000);
    const rest = Array.from({ length: 1199 }, () => emitAck(socket, 'typing:start', { roomName, roomType: 'channel' }, 60_000));
    const acks = await Promise.all([first, ...rest]);
    assertOk(acks[0], 'the join behind the lock');
    await lock.released;
    const refused = acks.filter((a) => a && a.success === false);
    const ok = acks.filter((a) => a && a.success === true);
    assert.ok(refused.length >= 1, `1200 events behind a blocked one: some must be refused; acks: ${show(acks.slice(-3))}`);
    for (const a of refused) {
      assert.equal(assertErr(a, 'RATE_LIMITED', 'over the queue cap').message, 'too many events waiting', show(a));
    }
    assert.ok(ok.length >= 1024, `the queued events are handled once the database answers: ${ok.length} ok, ${refused.length} refused`);
    assert.equal(ok.length + refused.length, 1200);
    assert.ok(socket.connected, 'the socket stays connected');
    assert.equal((await emitAck(socket, 'ping', { timestamp: 3 })).timestamp, 3);
    socket.disconnect();
  });
});
}
