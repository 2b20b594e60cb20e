// Connection lifecycle edge: a client that leaves while its handshake is still running (the database is
// slow) must not stay online or counted as connected. socketioxide never runs a disconnect handler for such a
// socket; the server reaps it.
// PostgreSQL only: the handshake must be made to wait on a read, and SQLite (WAL) has no lock that blocks readers.
import assert from 'node:assert/strict';
import {
  describe, it, before, after, startServer, shutdown, makeClient, mintToken, http, show, uid, API_KEY, SERVICES_SKIPPED,
  PG_SKIP_REASON, noteSkips, holdWriteLock, sql, eventually,
} from './harness.mjs';

noteSkips();

describe('a client that leaves during its handshake [postgres]', { skip: SERVICES_SKIPPED ? PG_SKIP_REASON : false }, () => {
  let server;
  before(async () => {
    server = await startServer({ backend: 'postgres', env: { REALTIME_PRESENCE_OFFLINE_GRACE: '300' } });
  });
  after(() => shutdown(server));

  it('is not left online or counted as a connection', async () => {
    const user = uid('leaver');
    // hold the members table (readers wait too) for 3 s: the handshake's rooms query waits behind the lock
    const lock = await holdWriteLock(server, { tables: ['np_realtime_room_members'], ms: 3000, mode: 'ACCESS EXCLUSIVE' });
    const socket = makeClient(server, { token: mintToken(user) });
    // proof that the handshake is blocked: one of the server's queries waits for a lock
    await eventually('a query of the server waiting for the lock', async () => {
      const waiting = sql(server, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() " +
        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()");
      return Number(waiting) > 0;
    }, { timeoutMs: 2500, intervalMs: 50 });
    assert.equal(socket.connected, false, 'the client is not connected while its handshake waits');
    socket.disconnect();
    await lock.released; // psql's exit status is checked there

    // the reaper runs every 5 s and takes sessions unknown to socketioxide after 10 s
    await eventually('the user to be offline with no connection left', async () => {
      const pres = await http(server, 'GET', `/api/users/${encodeURIComponent(user)}/presence`, { apiKey: API_KEY });
      const conns = await http(server, 'GET', '/api/connections', { apiKey: API_KEY });
      assert.equal(pres.status, 200, show(pres.body));
      const stats = await http(server, 'GET', '/api/stats', { apiKey: API_KEY });
      const mine = conns.body.connections.filter((c) => c.userId === user);
      return pres.body.connected === false && pres.body.presence.status === 'offline' && mine.length === 0 &&
        stats.body.connections === 0 && stats.body.usersOnline === 0
        ? true : { done: false, presence: pres.body, connections: mine, stats: stats.body };
    }, { timeoutMs: 40_000, intervalMs: 500 });
  });
});
