// A database outage and the recovery after it: /health, handshakes, sends, and nothing acked that was not stored.
// PostgreSQL only: SQLite is a file inside the server's process, there is no server to lose (and root ignores file modes).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  describe, it, before, after, startServer, shutdown, connectClient, emitAck, waitFor, assertOk, show, uid, join, http,
  mintToken, expectConnectError, eventually, SERVICES_SKIPPED, PG_SKIP_REASON, PG_BASE, noteSkips, API_KEY,
} from './harness.mjs';

noteSkips();

/** SQL on the `postgres` database of the test server (not the server's own database, which goes away). */
function admin(query) {
  const u = new URL(PG_BASE);
  u.pathname = '/postgres';
  const r = spawnSync('psql', [u.toString(), '-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-c', query], { encoding: 'utf8', timeout: 15_000 });
  if (r.error) throw new Error(`psql failed to run: ${r.error.message}`);
  assert.equal(r.status, 0, `psql ${query} exited ${r.status}: ${r.stderr}`);
  return r.stdout.trim();
}

describe('database outage [postgres]', { skip: SERVICES_SKIPPED ? PG_SKIP_REASON : false }, () => {
  let server;
  before(async () => {
    server = await startServer({ backend: 'postgres' });
  });
  after(async () => {
    if (server && server.dbName) admin(`ALTER DATABASE "${server.dbName}" ALLOW_CONNECTIONS true`);
    await shutdown(server);
  });

  it('while PostgreSQL refuses the server: /health is 503, handshakes and sends are refused with clear errors, nothing unstored is acked; afterwards all works again', async () => {
    const channelId = uid('chan');
    const alice = uid('alice');
    const bob = uid('bob');
    const a = await connectClient(server, { user: alice });
    const b = await connectClient(server, { user: bob });
    await join(a.socket, `channel:${channelId}`);
    await join(b.socket, `channel:${channelId}`);
    const before = assertOk(await emitAck(a.socket, 'message:send', { channelId, content: 'before', type: 'text', clientMessageId: uid('c') }), 'send before');

    // the outage: no new connection to the database, and the open ones are cut
    const db = server.dbName;
    admin(`ALTER DATABASE "${db}" ALLOW_CONNECTIONS false`);
    admin(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${db}'`);

    const health = await eventually('/health to report the database down', async () => {
      const h = await http(server, 'GET', '/health');
      return h.status === 503 ? h : null;
    }, { timeoutMs: 20_000, intervalMs: 250 });
    assert.equal(health.body.status, 'unhealthy', show(health.body));
    assert.equal(health.body.dependencies.database.status, 'disconnected', show(health.body));
    // without the API key the cause is withheld (it can name hosts and users); with it, it is the driver's
    assert.match(health.body.dependencies.database.error, /^did not answer/, show(health.body));
    const detailed = await http(server, 'GET', '/health', { apiKey: API_KEY });
    assert.equal(detailed.status, 503, show(detailed.body));
    assert.equal(typeof detailed.body.dependencies.database.error, 'string', show(detailed.body));
    assert.doesNotMatch(detailed.body.dependencies.database.error, /^did not answer/, show(detailed.body));

    const refusal = await expectConnectError(server, { token: mintToken(uid('newcomer')) }).catch((e) => e.message);
    assert.equal(refusal, 'Connection refused: the database is unavailable; retry shortly');

    // sends during the outage: refused with INTERNAL_ERROR (retryable), never acked as stored, never broadcast
    const attempts = [];
    for (let i = 0; i < 3; i++) {
      const cmid = uid('during');
      const failed = waitFor(a.socket, 'message:failed', (f) => f && f.clientMessageId === cmid, 30_000);
      const ack = await emitAck(a.socket, 'message:send', { channelId, content: `during-${i}`, type: 'text', clientMessageId: cmid }, 30_000);
      attempts.push({ cmid, ack, failed: await failed.catch(() => null) });
    }
    for (const { ack, failed } of attempts) {
      assert.equal(ack.success, false, `a send the database did not store must not be acked as sent: ${show(ack)}`);
      assert.equal(ack.error.code, 'INTERNAL_ERROR', show(ack));
      assert.ok(failed && failed.retryable === true, `message:failed, retryable: ${show(failed)}`);
    }
    assert.equal(b.socket.received.filter((r) => r.event === 'message:new' && String(r.args[0]?.content).startsWith('during-')).length, 0,
      'nothing that was not stored reached the room');
    assert.ok(a.socket.connected && b.socket.connected, 'the connected clients stay connected');

    // recovery
    admin(`ALTER DATABASE "${db}" ALLOW_CONNECTIONS true`);
    await eventually('/health to be 200 again', async () => (await http(server, 'GET', '/health')).status === 200, { timeoutMs: 30_000, intervalMs: 250 });
    const c = await connectClient(server, { user: uid('after') });
    // the client retries its failed sends with the same clientMessageId: each is stored once
    for (const { cmid } of attempts) {
      const d = await eventually('a retried send to be stored', async () => {
        const ack = await emitAck(a.socket, 'message:send', { channelId, content: 'retried', type: 'text', clientMessageId: cmid }, 30_000);
        return ack.success ? ack.data : null;
      }, { timeoutMs: 30_000, intervalMs: 500 });
      assert.equal(d.duplicate, undefined, `the failed send had stored nothing, so the retry is the first copy: ${show(d)}`);
    }
    const hist = assertOk(await emitAck(b.socket, 'sync:messages', { channelId, since: null, limit: 100 }), 'sync').messages;
    assert.deepEqual(hist.map((m) => m.content), ['before', 'retried', 'retried', 'retried'], show(hist));
    assert.deepEqual(hist.map((m) => m.seq), [before.seq, before.seq + 1, before.seq + 2, before.seq + 3], `no seq lost to the outage: ${show(hist)}`);
    c.socket.disconnect();
    a.socket.disconnect();
    b.socket.disconnect();
  });
});
