// CONTRACT §1/§3: every inbound payload validated — the original's crash inputs get an error and
// the server keeps serving everyone else; unknown events; oversized frames; per-user rate limit.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, shutdown, connectClient, emitAck, waitFor, waitDisconnect, assertOk, assertErr, show, uid, join, http,
} from './harness.mjs';

describe('validation and crash inputs', () => {
  let server;
  let bystander; // another user's client that must keep working throughout
  let bystander2;
  const room = uid('bystanders');

  before(async () => {
    server = await startServer();
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
    // presence is §9; for this suite any refusal counts, a success or a crash does not
    assertErr(status, ['VALIDATION_ERROR', 'PAYLOAD_TOO_LARGE', 'UNKNOWN_EVENT'], 'presence:update with a 10 KB status');
    const content = await emitAck(socket, 'message:send', { roomName: room, content: 'c'.repeat(500 * 1024) }, 10_000);
    assertErr(content, ['VALIDATION_ERROR', 'PAYLOAD_TOO_LARGE'], 'message:send with 500 KB content');
    const name = await emitAck(socket, 'room:join', { roomName: 'r'.repeat(10 * 1024) });
    assertErr(name, ['VALIDATION_ERROR', 'PAYLOAD_TOO_LARGE'], 'room:join with a 10 KB room name');
    const thread = await emitAck(socket, 'message:send', { roomName: room, content: 'hi', threadId: 't'.repeat(1024 * 1024) }, 10_000);
    assertErr(thread, 'PAYLOAD_TOO_LARGE', 'message:send with a 1 MB threadId');
    const mentions = await emitAck(socket, 'message:send', { roomName: room, content: 'hi', mentions: Array.from({ length: 50_000 }, (_, i) => `u${i}`) }, 10_000);
    assertErr(mentions, ['VALIDATION_ERROR', 'PAYLOAD_TOO_LARGE'], 'message:send with 50,000 mentions');
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

  it('a frame above REALTIME_MAX_PAYLOAD (3 MB) closes only the offending connection', async () => {
    const { socket } = await connectClient(server, { user: uid('huge') });
    const gone = waitDisconnect(socket, 8000);
    socket.emit('message:send', { roomName: room, content: 'z'.repeat(3 * 1024 * 1024) });
    await gone;
    await stillServing('3 MB frame');
  });

  it('deeply nested JSON does not take the server down', async () => {
    const { socket } = await connectClient(server, { user: uid('deep') });
    await join(socket, room);
    let nested = {};
    for (let i = 0; i < 1000; i++) nested = { n: nested }; // far beyond serde_json's recursion limit (128)
    socket.emit('message:send', { roomName: room, content: 'deep', metadata: nested });
    socket.emit('room:join', { roomName: nested });
    await new Promise((r) => setTimeout(r, 300));
    socket.disconnect();
    await stillServing('deeply nested JSON');
  });

  it('unknown event: with an ack → UNKNOWN_EVENT ack; without → `error` event UNKNOWN_EVENT', async () => {
    const { socket } = await connectClient(server, { user: uid('unk') });
    assertErr(await emitAck(socket, 'no:such-event', { a: 1 }), 'UNKNOWN_EVENT', 'unknown event with ack');
    const errP = waitFor(socket, 'error', (e) => e && e.code === 'UNKNOWN_EVENT');
    socket.emit('no:such-event', { a: 1 });
    const e = await errP;
    assert.equal(typeof e.message, 'string', show(e));
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

describe('rate limit (REALTIME_RATE_LIMIT_POINTS=5, REALTIME_RATE_LIMIT_DURATION=60)', () => {
  let server;
  before(async () => {
    server = await startServer({ env: { REALTIME_RATE_LIMIT_POINTS: '5', REALTIME_RATE_LIMIT_DURATION: '60' } });
  });
  after(() => shutdown(server));

  it('the 6th+ acked event of a user gets RATE_LIMITED; another user is unaffected', async () => {
    const { socket } = await connectClient(server, { user: uid('spammer') });
    const acks = [];
    for (let i = 0; i < 8; i++) acks.push(await emitAck(socket, 'room:join', { roomName: uid(`r${i}`) }));
    for (let i = 0; i < 5; i++) assertOk(acks[i], `event #${i + 1} (within the limit); all acks: ${show(acks)}`);
    for (let i = 5; i < 8; i++) assertErr(acks[i], 'RATE_LIMITED', `event #${i + 1} (over the limit)`);

    const other = await connectClient(server, { user: uid('polite') });
    assertOk(await emitAck(other.socket, 'room:join', { roomName: uid('polite-room') }), 'another user is not limited');
    socket.disconnect();
    other.socket.disconnect();
  });

  it('a rate-limited message:send with clientMessageId also gets message:failed RATE_LIMITED', async () => {
    const { socket } = await connectClient(server, { user: uid('spammer2') });
    const room = uid('rl');
    assertOk(await emitAck(socket, 'room:join', { roomName: room }), 'join');
    for (let i = 0; i < 4; i++) await emitAck(socket, 'message:send', { roomName: room, content: `m${i}` });
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
