// docs/protocol.md §13: several dialects in one room, and several of nchat's stacks of one browser tab
// (one user, two sockets of different dialects) at the same time. Each socket gets each event once, in its
// own dialect; no socket gets another dialect's events. SQLite and PostgreSQL.
import { describe, it, before, after } from './harness.mjs';
import assert from 'node:assert/strict';
import { backends, noteSkips, startServer, shutdown, emitAck, assertOk, waitFor, show, uid, sleep } from './harness.mjs';
import { stack, seen, got, nothing } from './dialects.mjs';

noteSkips();

/** Names received more than once since `from` for one action (by a payload key). */
function doubled(socket, from, key) {
  const seenNames = new Map();
  for (const r of socket.received.slice(from)) {
    const k = `${r.event}|${key(r.args[0])}`;
    seenNames.set(k, (seenNames.get(k) || 0) + 1);
  }
  return [...seenNames].filter(([, n]) => n > 1).map(([k]) => k);
}

for (const backend of backends()) {
  describe(`mixed dialects [${backend.name}]`, { skip: backend.skip }, () => {
    let server;
    before(async () => {
      server = await startServer({ backend: backend.name });
    });
    after(() => shutdown(server));

    it('one room, four dialects: typing and messages reach each socket once, in its dialect', async () => {
      const channelId = uid('c');
      const [rita, sam, pia, sol] = [uid('rita'), uid('sam'), uid('pia'), uid('sol')];
      const R = (await stack(server, rita, { auth: { device: { type: 'web' } } })).socket; // services/realtime
      const S = (await stack(server, sam)).socket; // lib/socket or socketManager: compat
      const P = (await stack(server, pia, { auth: { userId: pia } })).socket; // the plugin tests
      const O = (await stack(server, sol, { auth: { protocol: 'socket' } })).socket; // lib/socket alone
      assertOk(await emitAck(R, 'room:join', { roomName: `channel:${channelId}` }), 'contract join');
      S.emit('channel:join', { channelId });
      P.emit('channel:join', { channelId });
      O.emit('channel:join', { channelId });
      for (const s of [S, P, O]) await seen(s, 'channel:joined', (e) => e.channelId === channelId);
      await sleep(300);
      const marks = [R, S, P, O].map((s) => s.received.length);

      R.emit('typing:start', { roomName: channelId, roomType: 'channel' });
      await seen(S, 'typing:event', (e) => e.roomName === channelId && e.users.some((u) => u.userId === rita));
      await seen(S, 'typing:start', (e) => e.userId === rita && e.channelId === channelId);
      await seen(S, 'message:typing', (e) => e.userId === rita && e.isTyping === true);
      await seen(P, 'typing', (e) => e.userId === rita && e.isTyping === true);
      await seen(O, 'typing:start', (e) => e.userId === rita);
      const content = uid('x');
      P.emit('message:send', { channelId, content, mentions: [] });
      const r = await seen(R, 'message:new', (m) => m.content === content);
      const s = await seen(S, 'message:new', (m) => m.content === content);
      await seen(P, 'message', (m) => m.content === content);
      await seen(O, 'message:new', (m) => m.content === content);
      assert.equal(r.roomName, `channel:${channelId}`, 'the contract payload');
      assert.ok(!('authorId' in r), `the contract socket gets the contract's payload: ${show(r)}`);
      assert.equal(s.authorId, pia, 'the compat socket gets the superset');
      await sleep(400);

      // each socket: each name once per action, and only its own dialect's names
      for (const [i, sock] of [R, S, P, O].entries()) {
        const twice = doubled(sock, marks[i], (p) => `${p?.userId}|${p?.content}|${p?.isTyping}|${(p?.users || []).length}`);
        assert.deepEqual(twice, [], `socket ${i} got an event twice: ${show(sock.received.slice(marks[i]).map((x) => x.event))}`);
      }
      const nchatOnly = ['typing:start', 'typing:stop', 'typing:channel', 'message:typing', 'presence:update', 'channel:member:join'];
      await nothing(R, [...nchatOnly, 'typing', 'message'], { from: marks[0], ms: 0, what: 'the contract socket:' });
      await nothing(P, ['message:new', 'typing:event', 'typing:start', 'message:typing'], { from: marks[2], ms: 0, what: 'the plugin socket:' });
      await nothing(O, ['typing:event', 'user:joined', 'presence:changed', 'typing', 'message'], { from: marks[3], ms: 0, what: 'the socket-only socket:' });
    });

    it('no event any of nchat\'s stacks sends is unknown to its dialect', async () => {
      const libSocket = ['presence:update', 'presence:subscribe', 'presence:unsubscribe', 'typing:start', 'typing:stop',
        'message:send', 'reaction:add', 'reaction:remove', 'channel:join', 'channel:leave', 'notification:read',
        'notification:read:all', 'read:update', 'user:status'];
      const socketManager = ['message:send', 'message:edit', 'message:delete', 'message:typing', 'channel:join',
        'channel:leave', 'presence:update', 'presence:subscribe', 'reaction:add', 'reaction:remove', 'ping', 'message:new',
        ...['initiate', 'accept', 'decline', 'end', 'busy', 'cancelled', 'offer', 'answer', 'ice-candidate', 'renegotiate',
          'mute:changed', 'video:changed', 'screen-share:started', 'screen-share:stopped'].map((n) => `call:${n}`),
        ...['start', 'end', 'quality-update', 'viewer-joined', 'viewer-left', 'viewer-count', 'chat-message', 'chat-deleted',
          'chat-pinned', 'reaction', 'error'].map((n) => `stream:${n}`)];
      const realtime = ['ping', 'auth:refresh', 'room:join', 'room:leave', 'message:send', 'message:edit', 'message:delete',
        'typing:start', 'typing:stop', 'presence:update', 'presence:subscribe', 'presence:unsubscribe', 'presence:get',
        'presence:settings', 'read:update', 'message:read-ack', 'reaction:add', 'reaction:remove', 'sync:messages',
        'sync:channels', 'delivery:sync'];
      const plugin = ['channel:join', 'channel:leave', 'typing', 'presence:update', 'message:send'];
      const cases = [
        [await stack(server, uid('a')), [...libSocket, ...socketManager]],
        [await stack(server, uid('r'), { auth: { device: { type: 'web' } } }), realtime],
        [await stack(server, uid('p'), { auth: { protocol: 'socket' } }), [...libSocket, ...socketManager]],
      ];
      const pia = uid('p');
      cases.push([await stack(server, pia, { auth: { userId: pia } }), plugin]);
      for (const [{ socket }, events] of cases) {
        for (const event of events) {
          const ack = await emitAck(socket, event, {});
          assert.ok(!(ack && ack.success === false && ack.error?.code === 'UNKNOWN_EVENT'), `${event}: ${show(ack)}`);
        }
      }
      const [{ socket }] = cases[0];
      const ack = await emitAck(socket, 'no:such-event', {});
      assert.equal(ack.error?.code, 'UNKNOWN_EVENT', 'names no stack sends are still unknown');
    });

    it('one user, two stacks in one tab (compat and contract): each socket hears the other user once, in its dialect', async () => {
      const channelId = uid('c');
      const [sam, tom] = [uid('sam'), uid('tom')];
      const S1 = (await stack(server, sam)).socket;
      const S2 = (await stack(server, sam, { auth: { device: { type: 'web' } } })).socket;
      const T = (await stack(server, tom)).socket;
      S1.emit('channel:join', { channelId });
      assertOk(await emitAck(S2, 'channel:join', { channelId }), 'join');
      // S1's join has no ack: tom joins only once it is answered, or S1 could join after him and rightly miss it
      await seen(S1, 'channel:joined', (e) => e.channelId === channelId);
      T.emit('channel:join', { channelId });
      await seen(T, 'channel:joined');
      await seen(S1, 'channel:member:join', (e) => e.userId === tom);
      await seen(S2, 'user:joined', (e) => e.userId === tom);
      const marks = [S1.received.length, S2.received.length];
      const content = uid('hi');
      T.emit('message:send', { channelId, content });
      await seen(S1, 'message:new', (m) => m.content === content);
      await seen(S2, 'message:new', (m) => m.content === content);
      const off = waitFor(S1, 'presence:update', (e) => e.userId === tom && e.status === 'away');
      const off2 = waitFor(S2, 'presence:changed', (e) => e.userId === tom && e.status === 'away');
      T.emit('presence:update', { status: 'away' });
      await off;
      await off2;
      await sleep(300);
      assert.equal(got(S1, 'message:new', (m) => m.content === content, marks[0]).length, 1);
      assert.equal(got(S2, 'message:new', (m) => m.content === content, marks[1]).length, 1);
      assert.equal(got(S2, 'presence:update', () => true, marks[1]).length, 0, 'the contract socket of the same user');
    });
  });
}
