// docs/protocol.md §5: rooms — join/leave acks, types, policy (user:, dm:, private), user:joined/user:left
// per user (not per socket), memberCount counting users. Run against SQLite and PostgreSQL.
import assert from 'node:assert/strict';
import {
  describe, it, before, after, eventually, backends, noteSkips, startServer, shutdown, connectClient, emitAck, waitFor, expectNoEvent, countEvents, eventsOf,
  assertOk, assertErr, assertIso, show, uid, join, http, API_KEY, sleep,
} from './harness.mjs';

noteSkips();

// A long offline grace: a quick reconnect must fit in it even on a loaded machine.
const GRACE = 3000;

// the two backends' suites run side by side (each has its own server)
describe('rooms', { concurrency: 2 }, () => {
for (const backend of backends()) {
  describe(`rooms [${backend.name}]`, { skip: backend.skip, concurrency: 1 }, () => {
    let server;
    before(async () => {
      server = await startServer({ backend: backend.name, env: { REALTIME_PRESENCE_OFFLINE_GRACE: String(GRACE) } });
    });
    after(() => shutdown(server));

    it('room:join acks data {roomName, type, memberCount}; a bare name is a `channel`', async () => {
      const me = uid('a');
      const { socket } = await connectClient(server, { user: me });
      const room = uid('lobby');
      const data = await join(socket, room);
      assert.equal(data.roomName, room, show(data));
      assert.equal(data.type, 'channel', show(data));
      assert.equal(data.memberCount, 1, show(data));
      const g = await join(socket, 'general');
      assert.equal(g.roomName, 'general', show(g));
      assert.equal(g.type, 'channel', show(g));
      assert.ok(Number.isInteger(g.memberCount) && g.memberCount >= 1, show(g));
      // a room of at most 50 members lists them
      assert.ok(Array.isArray(data.members) && data.members.length === 1, `members must list the one member: ${show(data)}`);
      for (const m of data.members) {
        assert.equal(m.userId, me, show(data));
        assertIso(m.joinedAt, 'members[].joinedAt');
      }
      socket.disconnect();
    });

    it('typed names report the text before the FIRST colon as type', async () => {
      const { socket } = await connectClient(server, { user: uid('t') });
      const ch = `channel:${uid('c')}`;
      const th = `thread:${uid('t')}`;
      const d1 = await join(socket, ch);
      assert.equal(d1.type, 'channel', show(d1));
      assert.equal(d1.roomName, ch, show(d1));
      const d2 = await join(socket, th);
      assert.equal(d2.type, 'thread', show(d2));
      socket.disconnect();
    });

    it('user:<self> is joinable; user:<other> → FORBIDDEN', async () => {
      const me = uid('me');
      const { socket } = await connectClient(server, { user: me });
      const d = await join(socket, `user:${me}`);
      assert.equal(d.type, 'user', show(d));
      const ack = await emitAck(socket, 'room:join', { roomName: `user:${uid('someone')}` });
      assertErr(ack, 'FORBIDDEN', 'room:join user:<other>');
      socket.disconnect();
    });

    it('private room (admin API): non-members refused; joinable once added as member', async () => {
      const room = uid('private');
      const res = await http(server, 'POST', '/api/rooms', { apiKey: API_KEY, body: { name: room, visibility: 'private' } });
      assert.equal(res.status, 201, `POST /api/rooms → ${res.status} ${show(res.body)}`);

      const outsider = uid('outsider');
      const { socket } = await connectClient(server, { user: outsider });
      const ack = await emitAck(socket, 'room:join', { roomName: room });
      assertErr(ack, 'NOT_A_MEMBER', 'room:join private room as non-member');

      // a refused join must not put the socket into the room: it must not receive its messages
      const member = uid('member');
      const add = await http(server, 'POST', `/api/rooms/${encodeURIComponent(room)}/members`, { apiKey: API_KEY, body: { userId: member } });
      assert.ok(add.status >= 200 && add.status < 300, `POST members → ${add.status} ${show(add.body)}`);
      const m = await connectClient(server, { user: member });
      const d = await join(m.socket, room);
      assert.equal(d.roomName, room, show(d));
      const content = uid('private-msg');
      assertOk(await emitAck(m.socket, 'message:send', { roomName: room, content }), 'member message:send');
      await expectNoEvent(socket, 'message:new', 600, (x) => x && x.content === content);
      socket.disconnect();
      m.socket.disconnect();
    });

    it('dm:<a>:<b> is joinable by exactly those two users', async () => {
      const a = uid('a');
      const b = uid('b');
      const [x, y] = [a, b].sort();
      const dm = `dm:${x}:${y}`;
      const ca = await connectClient(server, { user: a });
      const cb = await connectClient(server, { user: b });
      const cc = await connectClient(server, { user: uid('c') });
      const da = await join(ca.socket, dm);
      assert.equal(da.type, 'dm', show(da));
      assert.equal(da.roomName, dm, show(da));
      await join(cb.socket, dm);
      assertErr(await emitAck(cc.socket, 'room:join', { roomName: dm }), 'FORBIDDEN', `third user joining ${dm}`);
      for (const c of [ca, cb, cc]) c.socket.disconnect();
    });

    it('group-dm rooms: members only, type reported as given (`group-dm`)', async () => {
      const room = `group-dm:${uid('g')}`;
      const res = await http(server, 'POST', '/api/rooms', { apiKey: API_KEY, body: { name: room, type: 'group', visibility: 'private' } });
      assert.equal(res.status, 201, show(res.body));
      const member = uid('gm');
      const add = await http(server, 'POST', `/api/rooms/${encodeURIComponent(room)}/members`, { apiKey: API_KEY, body: { userId: member } });
      assert.ok(add.status < 300, show(add.body));
      const m = await connectClient(server, { user: member });
      const d = await join(m.socket, room);
      assert.equal(d.type, 'group-dm', show(d));
      const o = await connectClient(server, { user: uid('outsider') });
      assertErr(await emitAck(o.socket, 'room:join', { roomName: room }), 'NOT_A_MEMBER', 'outsider joins group-dm');
      m.socket.disconnect();
      o.socket.disconnect();
    });

    it('memberCount counts users, not sockets', async () => {
      const room = uid('count');
      const alice = uid('alice');
      const a1 = await connectClient(server, { user: alice });
      const a2 = await connectClient(server, { user: alice });
      const b = await connectClient(server, { user: uid('bob') });
      assert.equal((await join(a1.socket, room)).memberCount, 1);
      const d2 = await join(a2.socket, room);
      assert.equal(d2.memberCount, 1, `second socket of the same user must not count: ${show(d2)}`);
      const d3 = await join(b.socket, room);
      assert.equal(d3.memberCount, 2, `two users: ${show(d3)}`);
      for (const c of [a1, a2, b]) c.socket.disconnect();
    });

    it('user:joined once per user (not per socket); user:left when the last socket leaves', async () => {
      const room = uid('presence-room');
      const alice = uid('alice');
      const bob = uid('bob');
      const a = await connectClient(server, { user: alice });
      await join(a.socket, room);

      const b1 = await connectClient(server, { user: bob, claims: { name: 'Bob Builder' } });
      const joinedP = waitFor(a.socket, 'user:joined', (e) => e && e.userId === bob && e.roomName === room);
      await join(b1.socket, room);
      const joined = await joinedP;
      assertIso(joined.timestamp, 'user:joined.timestamp');
      assert.equal(joined.userName, 'Bob Builder', `userName from the token: ${show(joined)}`);
      assert.equal(joined.userAvatar, null, `no avatar claim → null: ${show(joined)}`);

      // second device of bob: connects (auto-joins the persisted room) and joins explicitly → no second user:joined
      const mark = a.socket.received.length;
      const b2 = await connectClient(server, { user: bob });
      await join(b2.socket, room);
      await expectNoEvent(a.socket, 'user:joined', 800, (e) => e && e.userId === bob, { from: mark });
      assert.equal(countEvents(a.socket, 'user:joined', (e) => e && e.userId === bob && e.roomName === room), 1,
        `alice must see exactly one user:joined for bob: ${show(a.socket.received.filter((r) => r.event === 'user:joined'))}`);

      // one of bob's sockets goes away: bob is still in the room → no user:left
      b2.socket.disconnect();
      await expectNoEvent(a.socket, 'user:left', GRACE + 800, (e) => e && e.userId === bob);

      // bob's last socket leaves → user:left
      const leftP = waitFor(a.socket, 'user:left', (e) => e && e.userId === bob && e.roomName === room, 5000);
      assertOk(await emitAck(b1.socket, 'room:leave', { roomName: room }), 'room:leave');
      const left = await leftP;
      assertIso(left.timestamp, 'user:left.timestamp');
      a.socket.disconnect();
      b1.socket.disconnect();
    });

    it('user:left when the last socket disconnects (after the offline grace)', async () => {
      const room = uid('disc-room');
      const a = await connectClient(server, { user: uid('alice') });
      await join(a.socket, room);
      const carol = uid('carol');
      const c = await connectClient(server, { user: carol });
      const jp = waitFor(a.socket, 'user:joined', (e) => e && e.userId === carol);
      await join(c.socket, room);
      await jp;
      const leftP = waitFor(a.socket, 'user:left', (e) => e && e.userId === carol && e.roomName === room, GRACE + 10_000);
      const t0 = Date.now();
      c.socket.disconnect();
      await leftP;
      assert.ok(Date.now() - t0 >= GRACE - 200, `user:left came ${Date.now() - t0} ms after the disconnect, before the grace (${GRACE} ms)`);
      a.socket.disconnect();
    });

    it('many users disconnecting at once: every one of them gets a user:left (after the grace)', async () => {
      const room = uid('crowd');
      const a = await connectClient(server, { user: uid('watcher') });
      await join(a.socket, room);
      const users = Array.from({ length: 12 }, () => uid('u'));
      const cs = await Promise.all(users.map(async (u) => {
        const c = await connectClient(server, { user: u });
        await join(c.socket, room);
        return c;
      }));
      cs.forEach((c) => c.socket.disconnect());
      const left = () => new Set(eventsOf(a.socket, 'user:left', (e) => e && e.roomName === room).map((e) => e.userId));
      await eventually('a user:left for each of the 12 users', async () => left().size >= users.length || { done: false, missing: users.filter((u) => !left().has(u)) },
        { timeoutMs: GRACE + 12_000 });
      a.socket.disconnect();
    });

    it('second devices disconnecting at once, then each user leaving: user:left for every user', async () => {
      const room = uid('crowd2');
      const a = await connectClient(server, { user: uid('watcher') });
      await join(a.socket, room);
      const users = Array.from({ length: 12 }, () => uid('u'));
      const firsts = await Promise.all(users.map(async (u) => {
        const c = await connectClient(server, { user: u });
        await join(c.socket, room);
        return c;
      }));
      const seconds = await Promise.all(users.map((u) => connectClient(server, { user: u }))); // auto-join the room
      const secondIds = new Set(seconds.map((c) => c.socket.id));
      seconds.forEach((c) => c.socket.disconnect());
      // the server has closed them all, then their grace has run out
      await eventually('the second devices to be gone', async () => {
        const list = (await http(server, 'GET', '/api/connections', { apiKey: API_KEY })).body.connections;
        return !list.some((c) => secondIds.has(c.socketId));
      });
      await sleep(GRACE + 500);
      const early = eventsOf(a.socket, 'user:left', (e) => e && e.roomName === room);
      assert.deepEqual(early, [], 'users with a socket still in the room must not be announced as left');
      await Promise.all(firsts.map((c) => emitAck(c.socket, 'room:leave', { roomName: room })));
      const left = () => new Set(eventsOf(a.socket, 'user:left', (e) => e && e.roomName === room).map((e) => e.userId));
      await eventually('a user:left for each user after their last socket left', async () => left().size >= users.length || { done: false, missing: users.filter((u) => !left().has(u)) },
        { timeoutMs: 10_000 });
      a.socket.disconnect();
      firsts.forEach((c) => c.socket.disconnect());
    });

    it('a quick reconnect (within the offline grace) produces no user:left / user:joined', async () => {
      const room = uid('flaky-net');
      const a = await connectClient(server, { user: uid('alice') });
      await join(a.socket, room);
      const dave = uid('dave');
      const d1 = await connectClient(server, { user: dave });
      const jp = waitFor(a.socket, 'user:joined', (e) => e && e.userId === dave);
      await join(d1.socket, room);
      await jp;
      const mark = a.socket.received.length;
      d1.socket.disconnect();
      const d2 = await connectClient(server, { user: dave }); // rejoins the persisted room on connect
      assert.ok(d2.authenticated.rooms.includes(room), show(d2.authenticated));
      await expectNoEvent(a.socket, 'user:left', GRACE + 800, (e) => e && e.userId === dave, { from: mark });
      await expectNoEvent(a.socket, 'user:joined', 0, (e) => e && e.userId === dave, { from: mark });
      a.socket.disconnect();
      d2.socket.disconnect();
    });

    it('room:leave forget:true from one of two sockets takes the user out: the others get user:left', async () => {
      const room = uid('forget');
      const alice = uid('alice');
      const a1 = await connectClient(server, { user: alice });
      const a2 = await connectClient(server, { user: alice });
      const b = await connectClient(server, { user: uid('bob') });
      await join(a1.socket, room);
      await join(a2.socket, room);
      await join(b.socket, room);
      const left = waitFor(b.socket, 'user:left', (e) => e && e.userId === alice && e.roomName === room);
      assertOk(await emitAck(a1.socket, 'room:leave', { roomName: room, forget: true }), 'room:leave forget:true');
      await left;
      for (const c of [a1, a2, b]) c.socket.disconnect();
    });

    it('room:leave acks and stops delivery to that socket; membership persists unless forget:true', async () => {
      const room = uid('leave');
      const user = uid('leaver');
      const other = await connectClient(server, { user: uid('other') });
      await join(other.socket, room);
      const c = await connectClient(server, { user });
      await join(c.socket, room);
      const ack = await emitAck(c.socket, 'room:leave', { roomName: room });
      assertOk(ack, 'room:leave');

      const content = uid('after-leave');
      assertOk(await emitAck(other.socket, 'message:send', { roomName: room, content }), 'message:send');
      await expectNoEvent(c.socket, 'message:new', 600, (m) => m && m.content === content);
      c.socket.disconnect();

      // persisted membership stays: the room is rejoined on the next connection
      const c2 = await connectClient(server, { user });
      assert.ok(c2.authenticated.rooms.includes(room), `after a plain room:leave the room stays in authenticated.rooms: ${show(c2.authenticated)}`);
      assertOk(await emitAck(c2.socket, 'room:leave', { roomName: room, forget: true }), 'room:leave forget:true');
      c2.socket.disconnect();

      const c3 = await connectClient(server, { user });
      assert.ok(!c3.authenticated.rooms.includes(room), `after forget:true the room must be gone from authenticated.rooms: ${show(c3.authenticated)}`);
      c3.socket.disconnect();
      other.socket.disconnect();
    });

    it('max_members is enforced (room created with maxMembers: 2)', async () => {
      const room = uid('small');
      const res = await http(server, 'POST', '/api/rooms', { apiKey: API_KEY, body: { name: room, maxMembers: 2 } });
      assert.equal(res.status, 201, `POST /api/rooms → ${res.status} ${show(res.body)}`);
      const cs = [];
      for (const u of ['m1', 'm2', 'm3']) cs.push(await connectClient(server, { user: uid(u) }));
      await join(cs[0].socket, room);
      await join(cs[1].socket, room);
      const ack = await emitAck(cs[2].socket, 'room:join', { roomName: room });
      const err = assertErr(ack, 'FORBIDDEN', 'a third member of a room with maxMembers 2');
      assert.ok(err.message.endsWith('is full (2 members)'), `the refusal says the room is full: ${show(err)}`);
      // an existing member's second device still gets in
      const again = await connectClient(server, { user: cs[0].authenticated.userId });
      await join(again.socket, room);
      for (const c of [...cs, again]) c.socket.disconnect();
    });

    it('room:join with a missing roomName → VALIDATION_ERROR', async () => {
      const { socket } = await connectClient(server, { user: uid('v') });
      assertErr(await emitAck(socket, 'room:join', {}), 'VALIDATION_ERROR', 'room:join {}');
      assertErr(await emitAck(socket, 'room:join', { roomName: '' }), 'VALIDATION_ERROR', "room:join {roomName:''}");
      socket.disconnect();
    });
  });
}
});
