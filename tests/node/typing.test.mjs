// docs/protocol.md §9: typing — routing by roomType (channel / thread / dm), the typer's own sockets excluded,
// the full deduplicated list, refresh and expiry pushes, nchat's dm stop without recipientId, refusals,
// the alternative payload shapes, and (on PostgreSQL) zero database writes for a typing storm.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import {
  describe, it, before, after, backends, eventually, sqlitePath, startServer, shutdown, connectClient, emitAck, waitFor,
  assertOk, assertErr, assertIso, show, uid, join, sleep, PG_BASE, SERVICES_SKIPPED, PG_SKIP_REASON, noteSkips, http, API_KEY,
} from './harness.mjs';

noteSkips();

const TIMEOUT = 3000; // REALTIME_TYPING_TIMEOUT (long enough to tell "at once" from an expiry on a loaded machine)
const COALESCE = 250; // REALTIME_TYPING_COALESCE (the default)

// ---------------------------------------------------------------------------------------------
// local helpers

const ids = (ev) => (ev && Array.isArray(ev.users) ? ev.users.map((u) => u.userId) : []);

/** typing:event payloads this socket received since `from` (optionally for one roomName). */
function typingEvents(socket, from = 0, roomName) {
  return socket.received
    .slice(from)
    .filter((r) => r.event === 'typing:event' && (roomName === undefined || r.args[0]?.roomName === roomName))
    .map((r) => r.args[0]);
}

function waitTyping(socket, roomName, pred, timeoutMs = 8000) {
  return waitFor(socket, 'typing:event', (e) => e && e.roomName === roomName && pred(e), timeoutMs);
}

const sameSet = (a, b) => a.length === b.length && [...a].sort().join('\n') === [...b].sort().join('\n');

function checkEvent(e, exp) {
  const ctx = show(e);
  assert.equal(e.roomName, exp.roomName, `roomName: ${ctx}`);
  assert.equal(e.roomType, exp.roomType, `roomType: ${ctx}`);
  if (exp.threadId !== undefined) assert.equal(e.threadId, exp.threadId, `threadId: ${ctx}`);
  assert.ok(Array.isArray(e.users), `users must be an array: ${ctx}`);
  const uids = ids(e);
  assert.equal(new Set(uids).size, uids.length, `users must be deduplicated: ${ctx}`);
  for (const u of e.users) {
    assert.equal(typeof u.userId, 'string', ctx);
    assertIso(u.startedAt, 'typing:event users[].startedAt');
  }
}

async function cast(server) {
  const channelId = uid('chan');
  const room = `channel:${channelId}`;
  const alice = uid('alice');
  const a1 = await connectClient(server, { user: alice, claims: { name: 'Alice A', picture: 'https://x.test/a.png' } });
  const a2 = await connectClient(server, { user: alice }); // alice's other device
  const bob = uid('bob');
  const b = await connectClient(server, { user: bob });
  const carol = uid('carol');
  const c = await connectClient(server, { user: carol });
  const d = await connectClient(server, { user: uid('dave') }); // outside the channel
  for (const s of [a1, a2, b, c]) await join(s.socket, room);
  await join(d.socket, uid('other'));
  return { channelId, room, alice, bob, carol, a1, a2, b, c, d };
}

function disconnectAll(...cs) {
  for (const c of cs) c.socket.disconnect();
}

// ---------------------------------------------------------------------------------------------

// the two databases' suites run side by side (each with its own servers); inside one, tests run one at a time
describe('typing', { concurrency: 2 }, () => {
for (const backend of backends()) {
describe(`typing [${backend.name}]`, { skip: backend.skip, concurrency: 1 }, () => {
  let server;
  before(async () => {
    server = await startServer({ backend: backend.name, env: { REALTIME_TYPING_TIMEOUT: String(TIMEOUT), REALTIME_TYPING_COALESCE: String(COALESCE) } });
  });
  after(() => shutdown(server));

  it('channel: the room (channel:<id>) gets typing:event with the bare roomName; not the typer\'s devices, not outsiders; stop → users: []', async () => {
    const { channelId, alice, a1, a2, b, c, d } = await cast(server);
    const startB = waitTyping(b.socket, channelId, (e) => ids(e).includes(alice));
    const startC = waitTyping(c.socket, channelId, (e) => ids(e).includes(alice));
    a1.socket.emit('typing:start', { roomName: channelId, roomType: 'channel' });
    const eb = await startB;
    await startC;
    checkEvent(eb, { roomName: channelId, roomType: 'channel' });
    assert.deepEqual(ids(eb), [alice], show(eb));
    assert.equal(eb.users[0].userName, 'Alice A', `userName from the name claim: ${show(eb)}`);
    assert.equal(eb.users[0].userAvatar, 'https://x.test/a.png', `userAvatar from the picture claim: ${show(eb)}`);
    assert.ok(Math.abs(Date.parse(eb.users[0].startedAt) - Date.now()) < 2000, `startedAt is server now: ${show(eb)}`);

    const stopB = waitTyping(b.socket, channelId, (e) => e.users.length === 0);
    const stopC = waitTyping(c.socket, channelId, (e) => e.users.length === 0);
    a1.socket.emit('typing:stop', { roomName: channelId, roomType: 'channel' });
    checkEvent(await stopB, { roomName: channelId, roomType: 'channel' });
    await stopC;
    await sleep(COALESCE + 200);
    for (const [who, s] of [['alice\'s other device', a2.socket], ['alice\'s typing device', a1.socket]]) {
      const own = typingEvents(s).filter((e) => ids(e).includes(alice));
      assert.equal(own.length, 0, `${who} must never see alice typing: ${show(own)}`);
    }
    assert.equal(typingEvents(d.socket).length, 0, `a socket outside the channel must see nothing: ${show(typingEvents(d.socket))}`);
    disconnectAll(a1, a2, b, c, d);
  });

  it('typing:event.users is the full deduplicated list (two devices of one user count once)', async () => {
    const { channelId, alice, bob, carol, a1, a2, b, c } = await cast(server);
    a1.socket.emit('typing:start', { roomName: channelId, roomType: 'channel' });
    a2.socket.emit('typing:start', { roomName: channelId, roomType: 'channel' });
    await sleep(50);
    b.socket.emit('typing:start', { roomName: channelId, roomType: 'channel' });
    const both = await waitTyping(c.socket, channelId, (e) => ids(e).includes(alice) && ids(e).includes(bob));
    checkEvent(both, { roomName: channelId, roomType: 'channel' });
    assert.ok(sameSet(ids(both), [alice, bob]), `carol must see exactly alice and bob: ${show(both)}`);
    await sleep(COALESCE + 200);
    for (const e of typingEvents(c.socket, 0, channelId)) checkEvent(e, { roomName: channelId, roomType: 'channel' });
    // bob sees alice typing (and never himself)
    const bobSees = typingEvents(b.socket, 0, channelId);
    assert.ok(bobSees.some((e) => ids(e).includes(alice)), `bob must see alice typing: ${show(bobSees)}`);
    assert.ok(bobSees.every((e) => !ids(e).includes(bob)), `bob must not see himself: ${show(bobSees)}`);
    // alice's devices see bob (two people typing at once still see each other) but never alice
    await sleep(100);
    for (const s of [a1.socket, a2.socket]) {
      const evs = typingEvents(s, 0, channelId);
      assert.ok(evs.some((e) => ids(e).includes(bob)), `alice (typing herself) must see bob typing: ${show(evs)}`);
      assert.ok(evs.every((e) => !ids(e).includes(alice)), `alice must not see herself: ${show(evs)}`);
    }
    // bob stops: the list shrinks to alice; alice stops on both devices: empty
    const mc = c.socket.received.length;
    b.socket.emit('typing:stop', { roomName: channelId, roomType: 'channel' });
    const afterBob = await waitTyping(c.socket, channelId, (e) => !ids(e).includes(bob));
    assert.deepEqual(ids(afterBob), [alice], `after bob stops, the list is alice only: ${show(afterBob)}`);
    a1.socket.emit('typing:stop', { roomName: channelId, roomType: 'channel' });
    a2.socket.emit('typing:stop', { roomName: channelId, roomType: 'channel' });
    await waitTyping(c.socket, channelId, (e) => e.users.length === 0);
    assert.ok(typingEvents(c.socket, mc, channelId).length >= 2);
    disconnectAll(a1, a2, b, c);
  });

  it('expiry: without a stop the entry expires after REALTIME_TYPING_TIMEOUT and users: [] is pushed; a start refreshes it', async () => {
    const { channelId, alice, a1, b } = await cast(server);
    const first = waitTyping(b.socket, channelId, (e) => ids(e).includes(alice));
    a1.socket.emit('typing:start', { roomName: channelId, roomType: 'channel' });
    const e1 = await first;
    await sleep(800);
    // refresh: re-broadcast with a later startedAt, expiry counted from now
    const refresh = waitTyping(b.socket, channelId, (e) => ids(e).includes(alice) && Date.parse(e.users[0].startedAt) > Date.parse(e1.users[0].startedAt));
    const tRefresh = Date.now();
    a1.socket.emit('typing:start', { roomName: channelId, roomType: 'channel' });
    await refresh;
    const gone = await waitTyping(b.socket, channelId, (e) => e.users.length === 0, TIMEOUT + 3000);
    const elapsed = Date.now() - tRefresh;
    assert.ok(elapsed >= TIMEOUT - 150, `expired ${elapsed} ms after the last start, before REALTIME_TYPING_TIMEOUT=${TIMEOUT}: ${show(gone)}`);
    assert.ok(elapsed <= TIMEOUT + 5000, `expiry pushed too late: ${elapsed} ms after the last start`);
    checkEvent(gone, { roomName: channelId, roomType: 'channel' });
    disconnectAll(a1, b);
  });

  it('coalescing: a burst of starts/stops gives at most one event per REALTIME_TYPING_COALESCE, ending with the true state', async () => {
    const { channelId, alice, a1, b } = await cast(server);
    const mark = b.socket.received.length;
    const t0 = Date.now();
    for (let i = 0; i < 40; i++) {
      a1.socket.emit(i % 2 ? 'typing:stop' : 'typing:start', { roomName: channelId, roomType: 'channel' });
      await sleep(15);
    }
    a1.socket.emit('typing:start', { roomName: channelId, roomType: 'channel' });
    // the final state arrives, then nothing more (a straggler would come within one window)
    await eventually('the final event (alice typing)', async () => {
      const evs = typingEvents(b.socket, mark, channelId);
      return evs.length > 0 && sameSet(ids(evs[evs.length - 1]), [alice]);
    }, { timeoutMs: 8000, intervalMs: 50 });
    await sleep(COALESCE + 300);
    const evs = b.socket.received.slice(mark).filter((r) => r.event === 'typing:event' && r.args[0]?.roomName === channelId);
    // Arrival times at the client say little about the server's spacing on a loaded machine, so the bound
    // is on the count: one event per window over the whole span (plus the first, sent at once), far below
    // the 41 changes.
    const span = evs[evs.length - 1].at - t0;
    const max = Math.ceil(span / COALESCE) + 2;
    assert.ok(evs.length <= max, `expected at most ${max} coalesced events over ${span} ms, got ${evs.length}: ${show(evs.map((r) => r.at - t0))}`);
    assert.ok(evs.length < 41 / 2, `41 changes must not give one event each: ${evs.length}`);
    assert.deepEqual(ids(evs[evs.length - 1].args[0]), [alice], 'the last event carries the current state (alice typing)');
    disconnectAll(a1, b);
  });

  it('thread: channel:<id> and thread:<threadId> both get it (once per socket), with threadId', async () => {
    const { channelId, alice, a1, a2, b, d } = await cast(server);
    const threadId = uid('th');
    const erin = await connectClient(server, { user: uid('erin') }); // follows the thread only
    await join(erin.socket, `thread:${threadId}`);
    const both = await connectClient(server, { user: uid('frank') }); // in the channel and the thread
    await join(both.socket, `channel:${channelId}`);
    await join(both.socket, `thread:${threadId}`);
    const markBoth = both.socket.received.length;

    const pE = waitTyping(erin.socket, channelId, (e) => ids(e).includes(alice));
    const pB = waitTyping(b.socket, channelId, (e) => ids(e).includes(alice));
    a1.socket.emit('typing:start', { roomName: channelId, roomType: 'thread', threadId });
    const ee = await pE;
    checkEvent(ee, { roomName: channelId, roomType: 'thread', threadId });
    checkEvent(await pB, { roomName: channelId, roomType: 'thread', threadId });
    await sleep(COALESCE + 300);
    const fr = typingEvents(both.socket, markBoth, channelId);
    assert.equal(fr.length, 1, `a socket in both rooms gets one event per change: ${show(fr)}`);
    // a thread's list is separate from its channel's list
    const chanMark = b.socket.received.length;
    const pStop = waitTyping(erin.socket, channelId, (e) => e.users.length === 0 && e.threadId === threadId);
    a1.socket.emit('typing:stop', { roomName: channelId, roomType: 'thread', threadId });
    await pStop;
    await sleep(COALESCE + 100);
    for (const e of typingEvents(b.socket, chanMark, channelId)) assert.equal(e.threadId, threadId, `thread events carry threadId: ${show(e)}`);
    assert.equal(typingEvents(d.socket).length, 0, `outsider: ${show(typingEvents(d.socket))}`);
    assert.ok(typingEvents(a2.socket).every((e) => !ids(e).includes(alice)), 'typer\'s other device');
    disconnectAll(a1, a2, b, d, erin, both);
  });

  it('dm: dm:<a>:<b> plus user:<recipient>; stop without recipientId and the expiry push still reach the recipient; nobody else', async () => {
    const alice = uid('alice');
    const bob = uid('bob');
    const bare = [alice, bob].sort().join(':');
    const dmRoom = `dm:${bare}`;
    const a1 = await connectClient(server, { user: alice });
    const a2 = await connectClient(server, { user: alice });
    const b1 = await connectClient(server, { user: bob }); // bob has NOT joined the dm room: reached via user:<bob>
    const b2 = await connectClient(server, { user: bob });
    const c = await connectClient(server, { user: uid('carol') });
    await join(a1.socket, dmRoom);
    await join(c.socket, uid('elsewhere'));

    const start1 = waitTyping(b1.socket, bare, (e) => ids(e).includes(alice));
    const start2 = waitTyping(b2.socket, bare, (e) => ids(e).includes(alice));
    a1.socket.emit('typing:start', { roomName: bare, roomType: 'dm', recipientId: bob });
    checkEvent(await start1, { roomName: bare, roomType: 'dm' });
    await start2;
    // nchat's stop carries no recipientId
    const stop1 = waitTyping(b1.socket, bare, (e) => e.users.length === 0);
    a1.socket.emit('typing:stop', { roomName: bare, roomType: 'dm' });
    await stop1;

    // expiry push also reaches the remembered recipient
    const again = waitTyping(b1.socket, bare, (e) => ids(e).includes(alice));
    a1.socket.emit('typing:start', { roomName: bare, roomType: 'dm', recipientId: bob });
    await again;
    await waitTyping(b1.socket, bare, (e) => e.users.length === 0, TIMEOUT + 3000);

    // a recipient who does not share the dm is refused
    assertErr(await emitAck(a1.socket, 'typing:start', { roomName: bare, roomType: 'dm', recipientId: uid('mallory') }),
      'FORBIDDEN', 'typing:start with a foreign recipientId');
    await sleep(COALESCE + 200);
    assert.equal(typingEvents(c.socket).length, 0, `carol must see nothing: ${show(typingEvents(c.socket))}`);
    for (const s of [a1.socket, a2.socket]) {
      assert.ok(typingEvents(s).every((e) => !ids(e).includes(alice)), `alice's devices must not see herself: ${show(typingEvents(s))}`);
    }
    disconnectAll(a1, a2, b1, b2, c);
  });

  it('typing into a room the socket is not in → error (ack or `error` event), and nobody sees it', async () => {
    const { channelId, a1, b, d } = await cast(server);
    const dave = d.authenticated.userId;
    const ack = await emitAck(d.socket, 'typing:start', { roomName: channelId, roomType: 'channel' });
    assertErr(ack, 'NOT_A_MEMBER', 'typing:start into a room the socket is not in (with ack)');
    const errP = waitFor(d.socket, 'error', (e) => e && e.code === 'NOT_A_MEMBER');
    d.socket.emit('typing:start', { roomName: channelId, roomType: 'channel' });
    const err = await errP;
    assert.equal(typeof err.message, 'string', show(err));
    // a dm of two other users
    const bare = [uid('x'), uid('y')].sort().join(':');
    assertErr(await emitAck(d.socket, 'typing:start', { roomName: bare, roomType: 'dm' }), 'NOT_A_MEMBER', 'typing into a foreign dm');
    await sleep(COALESCE + 300);
    assert.ok(typingEvents(b.socket).every((e) => !ids(e).includes(dave)), `nobody may see dave typing: ${show(typingEvents(b.socket))}`);
    // bad input
    assertErr(await emitAck(a1.socket, 'typing:start', { roomName: channelId, roomType: 'galaxy' }), 'VALIDATION_ERROR', 'bad roomType');
    assertErr(await emitAck(a1.socket, 'typing:start', { roomName: channelId, roomType: 'thread' }), 'VALIDATION_ERROR', 'thread without threadId');
    assertErr(await emitAck(a1.socket, 'typing:start', {}), 'VALIDATION_ERROR', 'no room');
    disconnectAll(a1, b, d);
  });

  it('a bare-named channel (`general`-style room) is typed into by its bare name', async () => {
    const room = uid('lobby');
    const alice = uid('alice');
    const a = await connectClient(server, { user: alice });
    const b = await connectClient(server, { user: uid('bob') });
    const o = await connectClient(server, { user: uid('outsider') });
    await join(a.socket, room);
    await join(b.socket, room);
    const p = waitTyping(b.socket, room, (e) => ids(e).includes(alice));
    const ack = await emitAck(a.socket, 'typing:start', { roomName: room, roomType: 'channel' });
    assertOk(ack, 'typing:start into a bare-named room the socket is in');
    checkEvent(await p, { roomName: room, roomType: 'channel' });
    assertErr(await emitAck(o.socket, 'typing:start', { roomName: room, roomType: 'channel' }), 'NOT_A_MEMBER', 'outsider');
    await sleep(COALESCE + 100);
    assert.equal(typingEvents(o.socket).length, 0, show(typingEvents(o.socket)));
    disconnectAll(a, b, o);
  });

  it('a bare room and channel:<id> of the same id keep separate typing lists (nothing leaks from one to the other)', async () => {
    const id = uid('twin');
    const eve = await connectClient(server, { user: uid('eve') });
    const alice = uid('alice');
    const a = await connectClient(server, { user: alice });
    const b = await connectClient(server, { user: uid('bob') });
    await join(eve.socket, id); // the bare room
    await join(a.socket, `channel:${id}`);
    await join(b.socket, `channel:${id}`);
    assertOk(await emitAck(eve.socket, 'typing:start', { roomName: id, roomType: 'channel' }), 'typing in the bare room');
    const seen = waitTyping(b.socket, id, (e) => ids(e).includes(alice));
    assertOk(await emitAck(a.socket, 'typing:start', { roomName: id, roomType: 'channel' }), 'typing in channel:<id>');
    const ev = await seen;
    assert.ok(!ids(ev).includes(eve.authenticated.userId), `the channel's list must not include the bare room's typist: ${show(ev)}`);
    await sleep(COALESCE + 200);
    assert.ok(typingEvents(eve.socket).every((e) => !ids(e).includes(alice)), `the bare room must not see the channel's typists: ${show(typingEvents(eve.socket))}`);
    disconnectAll(eve, a, b);
  });

  it('a muted member may not type (muted live by the admin API, and still muted after reconnecting); unmuted, they may', async () => {
    const room = uid('quiet');
    const alice = uid('alice');
    let a = await connectClient(server, { user: alice });
    const b = await connectClient(server, { user: uid('bob') });
    await join(a.socket, room);
    await join(b.socket, room);
    const setMuted = async (muted) => {
      const res = await http(server, 'POST', `/api/rooms/${encodeURIComponent(room)}/members`, { apiKey: API_KEY, body: { userId: alice, muted } });
      assert.ok(res.status >= 200 && res.status < 300, `POST members {muted: ${muted}} → ${res.status} ${show(res.body)}`);
    };
    await setMuted(true);
    assertErr(await emitAck(a.socket, 'typing:start', { roomName: room, roomType: 'channel' }), 'FORBIDDEN', 'typing:start while muted');
    assertOk(await emitAck(a.socket, 'typing:stop', { roomName: room, roomType: 'channel' }), 'typing:stop is always allowed');
    a.socket.disconnect();
    a = await connectClient(server, { user: alice });
    assert.ok(a.authenticated.rooms.includes(room), show(a.authenticated));
    assertErr(await emitAck(a.socket, 'typing:start', { roomName: room, roomType: 'channel' }), 'FORBIDDEN', 'typing:start while muted, after a reconnect');
    await sleep(COALESCE + 200);
    assert.ok(typingEvents(b.socket).every((e) => !ids(e).includes(alice)), `nobody may see a muted user typing: ${show(typingEvents(b.socket))}`);

    await setMuted(false);
    const seen = waitTyping(b.socket, room, (e) => ids(e).includes(alice));
    assertOk(await emitAck(a.socket, 'typing:start', { roomName: room, roomType: 'channel' }), 'typing:start after unmute');
    await seen;
    assertOk(await emitAck(a.socket, 'typing:stop', { roomName: room, roomType: 'channel' }), 'stop');

    // muted and banned while connected elsewhere; unbanned only: the socket comes back into the room, still muted
    const flags = async (body) => {
      const res = await http(server, 'POST', `/api/rooms/${encodeURIComponent(room)}/members`, { apiKey: API_KEY, body: { userId: alice, ...body } });
      assert.ok(res.status >= 200 && res.status < 300, `POST members ${show(body)} → ${res.status} ${show(res.body)}`);
    };
    await flags({ muted: true, banned: true });
    a.socket.disconnect();
    a = await connectClient(server, { user: alice });
    assert.ok(!a.authenticated.rooms.includes(room), `a banned member is not rejoined: ${show(a.authenticated)}`);
    await flags({ banned: false });
    assertErr(await emitAck(a.socket, 'typing:start', { roomName: room, roomType: 'channel' }), 'FORBIDDEN', 'typing:start after an unban that kept the mute');
    disconnectAll(a, b);
  });

  it('alternative shapes: {channelId} and `typing {channelId, isTyping}`', async () => {
    const { channelId, alice, a1, b } = await cast(server);
    const s1 = waitTyping(b.socket, channelId, (e) => ids(e).includes(alice));
    a1.socket.emit('typing:start', { channelId });
    checkEvent(await s1, { roomName: channelId, roomType: 'channel' });
    const s2 = waitTyping(b.socket, channelId, (e) => e.users.length === 0);
    a1.socket.emit('typing', { channelId, isTyping: false });
    await s2;
    const s3 = waitTyping(b.socket, channelId, (e) => ids(e).includes(alice));
    a1.socket.emit('typing', { channelId, isTyping: true });
    await s3;
    disconnectAll(a1, b);
  });
});

describe(`typing with REALTIME_TYPING_TIMEOUT=60000 [${backend.name}]`, { skip: backend.skip, concurrency: 1 }, () => {
  let server;
  before(async () => {
    server = await startServer({ backend: backend.name, env: { REALTIME_TYPING_TIMEOUT: '60000' } });
  });
  after(() => shutdown(server));

  it('a disconnecting socket is withdrawn at once (no expiry can explain the empty list within a minute)', async () => {
    const { channelId, alice, a1, a2, b, c, d } = await cast(server);
    const started = waitTyping(b.socket, channelId, (e) => ids(e).includes(alice));
    a1.socket.emit('typing:start', { roomName: channelId, roomType: 'channel' });
    await started;
    const t0 = Date.now();
    const gone = waitTyping(b.socket, channelId, (e) => e.users.length === 0, 30_000);
    a1.socket.disconnect();
    await gone;
    assert.ok(Date.now() - t0 < 30_000);
    disconnectAll(a2, b, c, d);
  });
});

// zero database writes: on SQLite the database file and its WAL stay untouched (PostgreSQL: below)
if (backend.name === 'sqlite') describe('typing writes nothing to the database [sqlite]', { concurrency: 1 }, () => {
  let server;
  before(async () => {
    server = await startServer({ backend: backend.name, env: { REALTIME_TYPING_TIMEOUT: String(TIMEOUT) } });
  });
  after(() => shutdown(server));

  it('SQLite: 1,000 typing:start/stop events leave the database file and its WAL untouched', async () => {
    const channelId = uid('storm');
    const typists = [];
    for (let i = 0; i < 5; i++) {
      const t = await connectClient(server, { user: uid(`typist${i}`) });
      await join(t.socket, `channel:${channelId}`);
      typists.push(t);
    }
    const watcher = await connectClient(server, { user: uid('watcher') });
    await join(watcher.socket, `channel:${channelId}`);
    const files = [sqlitePath(server), `${sqlitePath(server)}-wal`];
    const snap = () => files.map((f) => { try { const st = statSync(f); return `${st.size}@${st.mtimeMs}`; } catch { return 'none'; } }).join(' ');
    // quiesce: connection rows, presence and audit writes of the connects have landed (stable for 2 s)
    let prev = snap();
    let stableSince = Date.now();
    const deadline = Date.now() + 30_000;
    while (Date.now() - stableSince < 2000) {
      assert.ok(Date.now() < deadline, `the database files of an idle server kept changing for 30 s (${prev})`);
      await sleep(200);
      const now = snap();
      if (now !== prev) { prev = now; stableSince = Date.now(); }
    }
    const before = snap();
    const mark = watcher.socket.received.length;
    await Promise.all(typists.map(async (t) => {
      for (let i = 0; i < 100; i++) {
        t.socket.emit('typing:start', { roomName: channelId, roomType: 'channel' });
        t.socket.emit('typing:stop', { roomName: channelId, roomType: 'channel' });
        if (i % 10 === 9) await sleep(20);
      }
    }));
    // Every typing event was handled: a ping behind them on each socket is answered. (A start and a stop in one
    // coalescing window cancel out, so the storm itself may show the watcher nothing: a last start each does.)
    for (const t of typists) t.socket.emit('typing:start', { roomName: channelId, roomType: 'channel' });
    for (const t of typists) assert.equal((await emitAck(t.socket, 'ping', { timestamp: 9 })).timestamp, 9);
    await waitFor(watcher.socket, 'typing:event', (e) => e && e.roomName === channelId && e.users.length > 0, 20_000).catch(() => null);
    assert.ok(watcher.socket.received.slice(mark).some((r) => r.event === 'typing:event' && r.args[0]?.users.length > 0), 'the watcher saw the typing');
    await sleep(1500); // a write triggered by the storm would be batched within about a second
    const errors = typists.flatMap((t) => t.socket.received.filter((r) => r.event === 'error').map((r) => r.args[0]));
    assert.equal(errors.length, 0, `the typing events must all be accepted: ${show(errors.slice(0, 3))}`);
    assert.equal(snap(), before, 'typing must not write to the SQLite database (file or WAL changed)');
    disconnectAll(...typists, watcher);
  });
});
}
});

// ---------------------------------------------------------------------------------------------
// zero database writes (PostgreSQL): docs/protocol.md §9 "State is ephemeral ... zero database writes"
//
// Measured with pg_stat_database.xact_commit + xact_rollback of the server's own database, read
// through psql connected to `postgres` (so the readings do not count). Two things move that counter
// without any client activity, and the test steps around them instead of tolerating a delta:
// - PostgreSQL backends publish their statistics at most once a second, and what could not be
//   published then only after up to 10 s idle: before measuring, the counter must stand still > 10 s;
// - the server's watchdog probes the database with `SELECT 1` every 15 s (also without systemd):
//   the measurement window is placed right after a probe and must end before the next one.

function adminPgUrl() {
  const u = new URL(PG_BASE);
  u.pathname = '/postgres';
  return u.toString();
}

function psql(sql) {
  const r = spawnSync('psql', [adminPgUrl(), '-X', '-A', '-t', '-q', '-c', sql], { encoding: 'utf8', timeout: 10_000 });
  if (r.error) throw new Error(`psql failed to run (${r.error.message}); is psql installed?`);
  if (r.status !== 0) {
    throw new Error(`psql against REALTIME_TEST_DATABASE_URL=${PG_BASE} failed (exit ${r.status}): ${r.stderr.trim()} ` +
      '(set REALTIME_TEST_DATABASE_URL to a reachable PostgreSQL server, or REALTIME_TEST_SERVICES=skip)');
  }
  return r.stdout.trim();
}

const WATCHDOG_PERIOD = 15_000; // the server's database probe when not under a systemd watchdog

describe('typing writes nothing to the database [postgres]', { skip: SERVICES_SKIPPED ? PG_SKIP_REASON : false }, () => {
  let server;
  before(async () => {
    psql('SELECT 1'); // fails naming REALTIME_TEST_DATABASE_URL when PostgreSQL is unreachable
    server = await startServer({ backend: 'postgres', env: { REALTIME_TYPING_TIMEOUT: String(TIMEOUT) } });
  });
  after(() => shutdown(server));

  it('1,000 typing:start/stop events move pg_stat_database xact_commit + xact_rollback by nothing', async () => {
    const db = server.dbName;
    assert.ok(/^[a-z0-9_]+$/.test(db), db);
    const counter = async () => {
      await sleep(1500); // statistics reach pg_stat_database at most once a second per backend
      const v = psql(`SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '${db}'`);
      assert.ok(/^\d+$/.test(v), `pg_stat_database has no row for ${db}: ${show(v)}`);
      return Number(v);
    };
    const lastProbe = () =>
      Number(psql(`SELECT coalesce(max(extract(epoch FROM query_start) * 1000), 0)::bigint FROM pg_stat_activity ` +
        `WHERE datname = '${db}' AND query = 'SELECT 1'`));
    const nextProbe = async () => {
      const seen = lastProbe();
      const deadline = Date.now() + WATCHDOG_PERIOD + 5000;
      while (Date.now() < deadline) {
        await sleep(200);
        if (lastProbe() > seen) return Date.now();
      }
      return null; // no probe: nothing to step around
    };

    // five typists and a watcher in one channel (connections and joins write: before we measure)
    const channelId = uid('storm');
    const typists = [];
    for (let i = 0; i < 5; i++) {
      const t = await connectClient(server, { user: uid(`typist${i}`) });
      await join(t.socket, `channel:${channelId}`);
      typists.push(t);
    }
    const watcher = await connectClient(server, { user: uid('watcher') });
    await join(watcher.socket, `channel:${channelId}`);

    // quiesce: no statistics may still be pending
    let prev = await counter();
    let stableSince = Date.now();
    const quiesceDeadline = Date.now() + 60_000;
    while (Date.now() - stableSince < 11_000) {
      assert.ok(Date.now() < quiesceDeadline, `the database of an idle server kept changing for 60 s (last reading ${prev})`);
      const v = await counter();
      if (v !== prev) {
        prev = v;
        stableSince = Date.now();
      }
    }

    const tries = [];
    for (let attempt = 1; attempt <= 3; attempt++) {
      const probeAt = await nextProbe();
      // baseline: the same waiting and reading with no activity
      const b0 = await counter();
      const b1 = await counter();
      // the storm: 5 users × 100 × (start + stop) = 1,000 events, each user within the rate limit
      const mark = watcher.socket.received.length;
      await Promise.all(
        typists.map(async (t) => {
          for (let i = 0; i < 100; i++) {
            t.socket.emit('typing:start', { roomName: channelId, roomType: 'channel' });
            t.socket.emit('typing:stop', { roomName: channelId, roomType: 'channel' });
            if (i % 10 === 9) await sleep(20);
          }
          // starts and stops inside one coalescing window cancel out: a last start shows the watcher something
          t.socket.emit('typing:start', { roomName: channelId, roomType: 'channel' });
          assert.equal((await emitAck(t.socket, 'ping', { timestamp: 9 })).timestamp, 9, 'the typing events ahead of it were handled');
        }),
      );
      await waitFor(watcher.socket, 'typing:event', (e) => e && e.roomName === channelId && e.users.length > 0, 20_000).catch(() => null);
      const after = await counter();
      const window = probeAt === null ? 0 : Date.now() - probeAt;
      const seen = watcher.socket.received.slice(mark).filter((r) => r.event === 'typing:event' && r.args[0]?.users.length > 0).length;
      assert.ok(seen >= 1, 'the watcher must have seen the typing (the events were handled)');
      const errors = typists.flatMap((t) => t.socket.received.filter((r) => r.event === 'error').map((r) => r.args[0]));
      assert.equal(errors.length, 0, `the typing events must all be accepted: ${show(errors.slice(0, 3))}`);
      tries.push({ b0, b1, after, windowMs: window });
      if (window < WATCHDOG_PERIOD - 1500) {
        const baseline = b1 - b0;
        assert.equal(after - b1, baseline,
          `typing must not touch the database: xact_commit+xact_rollback of ${db} moved by ${after - b1} during 1,000 typing events ` +
          `(idle baseline over the same wait: ${baseline}; readings ${show(tries)})`);
        disconnectAll(...typists, watcher);
        return;
      }
      // the window reached the next watchdog probe: measure again
    }
    assert.fail(`could not fit a measurement between two watchdog probes: ${show(tries)}`);
  });
});
