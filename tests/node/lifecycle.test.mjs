// Connection lifecycle edge: a client that leaves while its handshake is still running (the database is
// slow) must not stay online or counted as connected. socketioxide never runs a disconnect handler for such a
// socket; the server reaps it. PostgreSQL only: a table lock makes the handshake's query wait.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  startServer, shutdown, makeClient, mintToken, http, show, uid, sleep, API_KEY, SERVICES_SKIPPED, noteSkips,
} from './harness.mjs';

noteSkips();

describe('a client that leaves during its handshake [postgres]', { skip: SERVICES_SKIPPED ? 'REALTIME_TEST_SERVICES=skip' : false }, () => {
  let server;
  before(async () => {
    server = await startServer({ backend: 'postgres', env: { REALTIME_PRESENCE_OFFLINE_GRACE: '300' } });
  });
  after(() => shutdown(server));

  it('is not left online or counted as a connection', async () => {
    const user = uid('leaver');
    // hold the members table for 2 s: the handshake's rooms query waits behind the lock
    const locker = spawn('psql', [server.databaseUrl, '-X', '-q', '-c',
      'BEGIN; LOCK TABLE np_realtime_room_members IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(2); COMMIT;'], { stdio: 'ignore' });
    const lockerDone = new Promise((resolve) => locker.on('exit', resolve));
    await sleep(300);
    const socket = makeClient(server, { token: mintToken(user) });
    await sleep(500); // the handshake is now waiting for the lock
    socket.disconnect();
    await lockerDone;

    // the reaper runs every 5 s and takes sessions unknown to socketioxide after 10 s
    const deadline = Date.now() + 25_000;
    let last;
    while (Date.now() < deadline) {
      last = await http(server, 'GET', `/api/users/${encodeURIComponent(user)}/presence`, { apiKey: API_KEY });
      const conns = await http(server, 'GET', '/api/connections', { apiKey: API_KEY });
      const mine = (conns.body.connections || []).filter((c) => c.userId === user);
      if (last.status === 200 && last.body.connected === false && last.body.presence.status === 'offline' && mine.length === 0) return;
      await sleep(500);
    }
    assert.fail(`the user stayed connected/online: ${show(last && last.body)}`);
  });
});
