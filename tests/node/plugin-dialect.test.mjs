// docs/protocol.md §13.6: nchat's realtime plugin test dialect (seed "WebSocket Events",
// __tests__/plugins/realtime-plugin.test.ts): `auth {token, userId}`, channel:joined exactly once, typing,
// presence and message in its own shapes; auth.userId must be the token's user. SQLite and PostgreSQL.
import { describe, it, before, after } from './harness.mjs';
import assert from 'node:assert/strict';
import {
  backends, noteSkips, startServer, shutdown, waitFor, expectConnectError, mintToken, show, uid, countEvents, sleep,
} from './harness.mjs';
import { stack, seen, got, nothing, settled } from './dialects.mjs';

noteSkips();

for (const backend of backends()) {
  describe(`plugin dialect [${backend.name}]`, { skip: backend.skip }, () => {
    let server;
    before(async () => {
      server = await startServer({ backend: backend.name, env: { REALTIME_TYPING_TIMEOUT: '1500' } });
    });
    after(() => shutdown(server));

    // the plugin test's client: io(url, {auth: {token, userId}, reconnection: false, timeout: 5000})
    const plugin = (user) => stack(server, user, { auth: { userId: user }, transports: ['polling', 'websocket'] });

    it('auth.userId must be the token\'s user', async () => {
      const msg = await expectConnectError(server, { token: mintToken('alice'), auth: { userId: 'bob' } });
      assert.equal(msg, 'Invalid token: auth.userId does not match the token');
      const bad = await expectConnectError(server, { token: mintToken('alice'), auth: { protocol: 'klingon' } });
      assert.match(bad, /^Invalid protocol: /);
    });

    it('channel:join → channel:joined once and channel:members; typing, presence and message reach the peer', async () => {
      const channelId = `test-channel-realtime-${uid('')}`;
      const alice = uid('test-user-1');
      const bob = uid('test-user-2');
      const A = (await plugin(alice)).socket;
      const B = (await plugin(bob)).socket;
      A.emit('channel:join', { channelId });
      const joined = await waitFor(A, 'channel:joined', (e) => e.channelId === channelId);
      assert.deepEqual(joined, { channelId, userId: alice });
      const members = await seen(A, 'channel:members', (e) => e.channelId === channelId);
      assert.deepEqual(members.members.map((m) => m.userId), [alice], show(members));
      B.emit('channel:join', { channelId });
      await waitFor(B, 'channel:joined', (e) => e.channelId === channelId);
      await sleep(200);
      assert.equal(countEvents(A, 'channel:joined'), 1, 'exactly once');

      const typing = waitFor(B, 'typing', (e) => e.userId === alice && e.isTyping === true);
      A.emit('typing', { channelId, isTyping: true });
      assert.deepEqual(await typing, { userId: alice, channelId, isTyping: true });
      await waitFor(B, 'typing', (e) => e.userId === alice && e.isTyping === false, 4000);

      const presence = waitFor(B, 'presence', (e) => e.userId === alice && e.status === 'away', 8000);
      A.emit('presence:update', { status: 'away' });
      assert.deepEqual(await presence, { userId: alice, status: 'away' });
      const dnd = waitFor(B, 'presence', (e) => e.userId === alice && e.status === 'dnd', 8000);
      A.emit('presence:update', { status: 'dnd' });
      await dnd;

      const content = 'Hello from WebSocket test';
      const message = waitFor(B, 'message', (e) => e.userId === alice && e.content === content);
      A.emit('message:send', { channelId, content, mentions: [] });
      const m = await message;
      assert.equal(m.channelId, channelId);
      assert.equal(typeof m.id, 'string');

      const left = waitFor(A, 'channel:left', (e) => e.channelId === channelId);
      A.emit('channel:leave', { channelId });
      assert.deepEqual(await left, { channelId, userId: alice });

      // the plugin dialect gets its own names only: none of the contract's or lib/socket's
      const foreign = ['message:new', 'typing:event', 'typing:start', 'presence:changed', 'presence:update', 'user:joined'];
      await nothing(B, foreign, { ms: 0, what: 'a plugin socket:' });
      // a bad join is answered with `error` (the test tolerates it)
      const err = waitFor(A, 'error', (e) => e.code === 'VALIDATION_ERROR');
      A.emit('channel:join', { channelId: '' });
      await err;
      await settled(B);
      assert.equal(got(B, 'error').length, 0);
    });
  });
}
