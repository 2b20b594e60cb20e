// A full disk under SQLite: the ack fails, it never lies. The data directory is a small tmpfs of its own;
// it is filled to the last byte while clients send. Every send then fails with a clear, retryable error
// (no success ack for a message that was not stored, nothing broadcast that was not stored), the server stays
// up, sends work again as soon as space is freed (no restart), and after a restart `sync:messages` returns
// every message that was ever acked. SQLite only: PostgreSQL's disk is its own server's.
//
// Needs root (mount -t tmpfs). Without it the file is skipped with the reason, except under CI=true, where a
// skip fails.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readdirSync, rmSync, rmdirSync, unlinkSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  describe, it, before, after, startServer, shutdown, connectClient, emitAck, assertOk, show, uid, join, http,
  eventually,
} from './harness.mjs';

const SIZE = '8m';

/** Mounts a tmpfs of SIZE; returns {dir} or {skip: reason}. */
function smallFilesystem() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nself-rt-full-'));
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${SIZE},mode=0700`, 'tmpfs', dir], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    rmdirSync(dir);
    return { skip: `cannot mount a tmpfs for the full-disk test (${(r.error?.message || r.stderr || '').trim()}); run as root` };
  }
  return { dir };
}

function unmount(dir) {
  const r = spawnSync('umount', [dir], { encoding: 'utf8' });
  if (r.status === 0) rmdirSync(dir);
  else console.log(`# could not unmount ${dir}: ${r.stderr}`);
}

/** Writes `file` until the filesystem has no byte left; returns the bytes written. */
function fill(file) {
  const fd = openSync(file, 'w');
  let written = 0;
  try {
    for (const chunk of [Buffer.alloc(1 << 20, 1), Buffer.alloc(4096, 1), Buffer.alloc(1, 1)]) {
      for (;;) {
        try {
          written += writeSync(fd, chunk);
        } catch (e) {
          if (e.code === 'ENOSPC') break;
          throw e;
        }
      }
    }
  } finally {
    closeSync(fd);
  }
  return written;
}

const fs = smallFilesystem();
if (fs.skip) {
  if (process.env.CI === 'true') throw new Error(`${fs.skip}; under CI=true this test must run`);
  console.log(`# SKIPPED: ${fs.skip}`);
}

describe('a full disk [sqlite]', { skip: fs.skip || false }, () => {
  let server;
  before(async () => {
    server = await startServer({ backend: 'sqlite', dataDir: fs.dir });
  });
  after(async () => {
    try {
      await shutdown(server);
    } finally {
      for (const f of readdirSync(fs.dir)) rmSync(path.join(fs.dir, f), { recursive: true, force: true });
      unmount(fs.dir);
    }
  });

  it('sends fail with a clear error while the disk is full, nothing unstored is acked or broadcast, sends work again once space is freed, and every acked message survives a restart', async () => {
    const channelId = uid('chan');
    const a = await connectClient(server, { user: uid('alice') });
    const b = await connectClient(server, { user: uid('bob') });
    await join(a.socket, `channel:${channelId}`);
    await join(b.socket, `channel:${channelId}`);
    const acked = new Map(); // clientMessageId → content
    const send = async (content, cmid = uid('c')) => {
      const ack = await emitAck(a.socket, 'message:send', { channelId, content, type: 'text', clientMessageId: cmid }, 30_000);
      if (ack.success) acked.set(cmid, content);
      return { cmid, ack };
    };
    for (let i = 0; i < 5; i++) assertOk((await send(`before-${i}`)).ack, `send ${i} before the disk fills`);

    const filler = path.join(fs.dir, 'filler');
    const filled = fill(filler);
    const body = 'x'.repeat(2000);
    const during = [];
    for (let i = 0; i < 40; i++) during.push(await send(`during-${i}-${body}`));
    const ok = during.filter((d) => d.ack.success);
    const failed = during.filter((d) => !d.ack.success);
    console.log(`# disk filled with ${filled} bytes; ${during.length} sends while full: ${ok.length} acked, ${failed.length} refused; first refusal: ${show(failed[0]?.ack)}`);
    assert.ok(failed.length > 0, `a full disk must refuse sends: ${show(during.map((d) => d.ack.success))}`);
    for (const { ack } of failed) {
      assert.equal(ack.error.code, 'INTERNAL_ERROR', show(ack));
      assert.match(ack.error.message, /disk is full/, `the refusal says why: ${show(ack)}`);
    }
    // once the disk is full, sends keep failing (an ack after a refusal would be a write that found room)
    const firstFail = during.findIndex((d) => !d.ack.success);
    assert.deepEqual(during.slice(firstFail).map((d) => d.ack.success).filter(Boolean), [], 'every send after the first refusal is refused');
    const heard = b.socket.received.filter((r) => r.event === 'message:new').map((r) => r.args[0]?.clientMessageId);
    for (const { cmid } of failed) assert.ok(!heard.includes(cmid), `a refused message reached the room: ${cmid}`);
    assert.equal(server.exit, null, 'the server is still running');
    assert.ok(a.socket.connected && b.socket.connected, 'the clients stay connected');
    assert.equal((await http(server, 'GET', '/health')).status >= 200, true);

    // space comes back: sends work again without a restart; the refused ones are retried with their ids
    unlinkSync(filler);
    await eventually('a send to be stored again', async () => (await send(`after-${uid('')}`)).ack.success, { timeoutMs: 30_000, intervalMs: 250 });
    for (const { cmid, ack } of failed) {
      const retry = await send(`retried-${cmid}`, cmid);
      assertOk(retry.ack, `retry of ${cmid}`);
      assert.equal(retry.ack.data.duplicate, undefined, `the refused send had stored nothing: ${show(ack)} then ${show(retry.ack)}`);
    }

    // every acked message is there after a restart
    a.socket.disconnect();
    b.socket.disconnect();
    await server.restart();
    const c = await connectClient(server, { user: uid('carol') });
    await join(c.socket, `channel:${channelId}`);
    const hist = assertOk(await emitAck(c.socket, 'sync:messages', { channelId, since: null, limit: 500 }), 'sync').messages;
    const stored = new Map(hist.map((m) => [m.clientMessageId, m.content]));
    const lost = [...acked].filter(([cmid, content]) => stored.get(cmid) !== content);
    console.log(`# after the restart: ${acked.size} acked, ${hist.length} stored, ${lost.length} lost`);
    assert.deepEqual(lost, [], 'every acked message is stored');
    assert.equal(hist.length, acked.size, 'and nothing that was refused');
    c.socket.disconnect();
  });
});
