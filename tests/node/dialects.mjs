// Helpers shared by the dialect suites (socket-, socketmanager-, plugin-, contract-dialect, calls, mixed).
import assert from 'node:assert/strict';
import { connectClient, waitFor, show, sleep } from './harness.mjs';

/** Connects a client the way one of nchat's stacks does. `auth` is added to the token (e.g. {device}). */
export function stack(server, user, { auth = {}, transports = ['websocket', 'polling'], claims } = {}) {
  return connectClient(server, { user, auth, transports, claims });
}

/** An event already recorded since the socket connected, or the next one. */
export async function seen(socket, event, pred = () => true, timeoutMs = 4000) {
  const p = waitFor(socket, event, pred, timeoutMs);
  const hit = socket.received.find((r) => {
    if (r.event !== event) return false;
    try {
      return pred(...r.args);
    } catch {
      return false;
    }
  });
  if (hit) {
    p.catch(() => {});
    return hit.args[0];
  }
  return p;
}

/** Recorded events of a name (matching pred), from index `from`. */
export function got(socket, event, pred = () => true, from = 0) {
  return socket.received
    .slice(from)
    .filter((r) => {
      if (r.event !== event) return false;
      try {
        return pred(...r.args);
      } catch {
        return false;
      }
    })
    .map((r) => r.args[0]);
}

/** Waits `ms`, then asserts that nothing named in `events` (matching pred) arrived since `from`. */
export async function nothing(socket, events, { from = 0, ms = 600, pred = () => true, what = '' } = {}) {
  await sleep(ms);
  const bad = socket.received.slice(from).filter((r) => {
    if (!events.includes(r.event)) return false;
    try {
      return pred(...r.args);
    } catch {
      return false;
    }
  });
  assert.equal(bad.length, 0, `${what} expected none of ${events.join(', ')}, got: ${show(bad.map((b) => [b.event, b.args[0]]))}`);
}

/** A fresh timestamp: parseable and within 5 s of now. */
export function fresh(v, what) {
  const t = Date.parse(v);
  assert.ok(typeof v === 'string' && !Number.isNaN(t) && Math.abs(Date.now() - t) < 5000, `${what}: expected a current ISO time, got ${show(v)}`);
}

/** Emit without an ack, then wait for the server to have handled it (a ping with an ack follows it in order). */
export async function settled(socket) {
  await new Promise((resolve) => socket.timeout(5000).emit('ping', { timestamp: 1 }, () => resolve()));
}
