// Test harness for the nself-realtime interop suite (official socket.io-client 4.x).
//
// Starts the real server binary as a child process on a free port, with a fresh SQLite data dir
// or a fresh PostgreSQL database, mints JWTs, connects socket.io clients and offers small
// helpers (emitAck, waitFor, expectNoEvent, http) whose failures always show what was observed.
//
// Environment:
//   REALTIME_BIN                 server binary (default <repo>/target/debug/nself-realtime)
//   REALTIME_TEST_DATABASE_URL   PostgreSQL base URL for the postgres variants
//                                (default postgres://postgres@127.0.0.1:5432; a db path is replaced)
//   REALTIME_TEST_SERVICES=skip  skip the postgres variants (and say so)
//   REALTIME_TEST_VERBOSE=1      stream the servers' output to stderr

import * as nodeTest from 'node:test';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import jwt from 'jsonwebtoken';
import { io } from 'socket.io-client';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(here, '..', '..');
// resolved here: the server is spawned in its data directory, where a relative path would not lead to it
export const BIN = process.env.REALTIME_BIN ? path.resolve(process.env.REALTIME_BIN) : path.join(REPO_ROOT, 'target', 'debug', 'nself-realtime');
export const DEFAULT_PG_BASE = 'postgres://postgres@127.0.0.1:5432';
export const PG_BASE = process.env.REALTIME_TEST_DATABASE_URL || DEFAULT_PG_BASE;
export const SERVICES_SKIPPED = process.env.REALTIME_TEST_SERVICES === 'skip';
const VERBOSE = !!process.env.REALTIME_TEST_VERBOSE;

export const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}(Z|\+00:00)$/;

// ---------------------------------------------------------------------------------------------
// small utilities

export function uid(prefix = 'x') {
  return `${prefix}-${randomBytes(5).toString('hex')}`;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** JSON for failure messages, truncated. */
export function show(v, max = 1500) {
  let s;
  try {
    s = JSON.stringify(v, (_k, x) => (typeof x === 'string' && x.length > 200 ? `${x.slice(0, 60)}…(${x.length} chars)` : x));
  } catch {
    s = String(v);
  }
  if (s === undefined) s = String(v);
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

if (SERVICES_SKIPPED && process.env.CI === 'true') {
  throw new Error('REALTIME_TEST_SERVICES=skip is refused under CI=true: CI must run the PostgreSQL variants');
}

export const PG_SKIP_REASON = 'postgres variant skipped: REALTIME_TEST_SERVICES=skip';

/** Backends for the parametrized suites. */
export function backends() {
  return [
    { name: 'sqlite', skip: false },
    { name: 'postgres', skip: SERVICES_SKIPPED ? PG_SKIP_REASON : false },
  ];
}

export function noteSkips() {
  if (SERVICES_SKIPPED) {
    console.log('# NOTE: PostgreSQL variants are SKIPPED because REALTIME_TEST_SERVICES=skip');
  }
}

// ---------------------------------------------------------------------------------------------
// describe / it / before / after with skips that count
//
// node:test does not count the tests of a skipped `describe` (its summary says "skipped 0"), so a
// skipped PostgreSQL variant would vanish from the numbers. These wrappers turn a suite's `skip`
// into a skip of every test inside it (each one shows as skipped and is counted), and its hooks
// into no-ops (no server is started for a skipped variant). Test files import them from here.

let skipReason = false;

function withSkip(reason, fn) {
  const prev = skipReason;
  skipReason = reason;
  try {
    return fn();
  } finally {
    skipReason = prev;
  }
}

function splitArgs(opts, fn) {
  return typeof opts === 'function' ? [{}, opts] : [opts || {}, fn];
}

export function describe(name, opts, fn) {
  const [o, body] = splitArgs(opts, fn);
  const { skip, ...rest } = o;
  const reason = skip || skipReason;
  return nodeTest.describe(name, rest, () => withSkip(reason, body));
}

/** Per-test timeout unless a test sets its own (tests/interop.rs bounds each file's process as well). */
export const TEST_TIMEOUT_MS = 120_000;

export function it(name, opts, fn) {
  const [o, body] = splitArgs(opts, fn);
  const withTimeout = { timeout: TEST_TIMEOUT_MS, ...o };
  return nodeTest.it(name, skipReason ? { ...withTimeout, skip: skipReason } : withTimeout, body);
}

export function before(fn, o) {
  return nodeTest.before(skipReason ? () => {} : fn, o);
}

export function after(fn, o) {
  return nodeTest.after(skipReason ? () => {} : fn, o);
}

export function afterEach(fn, o) {
  return nodeTest.afterEach(skipReason ? () => {} : fn, o);
}

// ---------------------------------------------------------------------------------------------
// tokens

export const JWT_SECRET = `test-secret-${randomBytes(16).toString('hex')}`;
export const API_KEY = `test-key-${randomBytes(16).toString('hex')}`;

/**
 * Mint an HS256 JWT. Claims default to {sub, userId, name, exp: now+1h}; `extra` overrides/adds.
 * Pass extra.userId = undefined / extra.sub = undefined to drop a claim.
 */
export function mintToken(userId, extra = {}, { secret = JWT_SECRET, algorithm = 'HS256' } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub: userId, userId, name: `User ${userId}`, iat: now, exp: now + 3600, ...extra };
  for (const k of Object.keys(claims)) if (claims[k] === undefined) delete claims[k];
  return jwt.sign(claims, secret, { algorithm, noTimestamp: true });
}

// ---------------------------------------------------------------------------------------------
// server processes

const live = new Set();
process.on('exit', () => {
  for (const p of live) {
    try {
      p.kill('SIGKILL');
    } catch {}
  }
});

function tryBind(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', () => resolve(null));
    srv.listen(port, '127.0.0.1', () => {
      const got = srv.address().port;
      srv.close(() => resolve(got));
    });
  });
}

/**
 * A free TCP port on 127.0.0.1. Tried first below Linux's ephemeral range (32768+), so that the
 * outgoing connections of concurrently running test files cannot grab it between our check and the
 * server's bind; the caller retries on "Address already in use" anyway.
 */
export async function freePort() {
  for (let i = 0; i < 50; i++) {
    const port = await tryBind(20000 + Math.floor(Math.random() * 12000));
    if (port) return port;
  }
  const port = await tryBind(0);
  if (!port) throw new Error('no free port');
  return port;
}

function pgUrlFor(dbName) {
  let u;
  try {
    u = new URL(PG_BASE);
  } catch (e) {
    throw new Error(`REALTIME_TEST_DATABASE_URL is not a valid URL (${PG_BASE}): ${e.message}`);
  }
  u.pathname = `/${dbName}`;
  return u.toString();
}

function dropPgDatabase(dbName) {
  // Best effort: the server created the database; remove it so runs do not pile up databases.
  try {
    const u = new URL(PG_BASE);
    u.pathname = '/postgres';
    spawnSync('psql', [u.toString(), '-q', '-c', `DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`], {
      timeout: 5000,
      stdio: 'ignore',
    });
  } catch {}
}

/** Strip inherited config so every server is configured by the test only. */
function baseEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('REALTIME_') || k.startsWith('POSTGRES_') || k.startsWith('PG')) continue;
    if (['DATABASE_URL', 'PORT', 'REDIS_URL', 'JWT_SECRET', 'LOG_LEVEL', 'RUST_LOG'].includes(k)) continue;
    env[k] = v;
  }
  return env;
}

/**
 * Start a server.
 * opts.backend: 'sqlite' (default) | 'postgres'
 * opts.env: extra env (a value of undefined removes a default, e.g. {REALTIME_API_KEY: undefined})
 */
export async function startServer(opts = {}) {
  const backend = opts.backend || 'sqlite';
  if (!existsSync(BIN)) {
    throw new Error(`server binary not found at ${BIN} (build it with cargo build, or set REALTIME_BIN)`);
  }
  // opts.dataDir: a directory the caller made (and removes), e.g. a small filesystem of its own
  const dataDir = opts.dataDir || mkdtempSync(path.join(os.tmpdir(), 'nself-rt-test-'));
  const dbName = backend === 'postgres' ? `rt_test_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}` : null;
  const server = {
    backend,
    dataDir,
    ownDataDir: !!opts.dataDir,
    dbName,
    databaseUrl: dbName ? pgUrlFor(dbName) : null,
    extraEnv: { ...(opts.env || {}) },
    clients: new Set(),
    everySocket: [],
    proc: null,
    port: null,
    url: null,
    output: '',
    exit: null,
  };
  server.start = () => launch(server);
  server.stop = (o) => stopServer(server, o);
  server.restart = async () => {
    await stopServer(server, { keepData: true });
    await launch(server);
  };
  server.cleanup = () => cleanupServer(server);
  server.logs = (n = 6000) => server.output.slice(-n);
  await launch(server);
  return server;
}

async function launch(server) {
  // A restart keeps the port: the server's node id is host:port, and its crash repair (stale connections,
  // last seen) only looks at rows of its own node id.
  const keep = server.port;
  for (let attempt = 1; ; attempt++) {
    try {
      return await launchOnce(server, keep && attempt <= 3 ? keep : null);
    } catch (e) {
      // another process took the port between our check and the server's bind: try again (another port
      // only for a first start, or when the old port stays taken)
      if (attempt < 6 && /address already in use|os error 98|EADDRINUSE/i.test(server.output)) {
        await sleep(200);
        continue;
      }
      throw e;
    }
  }
}

async function launchOnce(server, samePort) {
  const port = samePort || await freePort();
  const env = {
    ...baseEnv(),
    NO_COLOR: '1',
    REALTIME_PORT: String(port),
    REALTIME_HOST: '127.0.0.1',
    REALTIME_DATA_DIR: server.dataDir,
    REALTIME_JWT_SECRET: JWT_SECRET,
    REALTIME_API_KEY: API_KEY,
    ...(server.databaseUrl ? { DATABASE_URL: server.databaseUrl } : {}),
    ...server.extraEnv,
  };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];

  server.port = port;
  server.url = `http://127.0.0.1:${port}`;
  server.output = '';
  server.exit = null;
  const proc = spawn(BIN, ['server', 'run'], { cwd: server.dataDir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  server.proc = proc;
  live.add(proc);
  const append = (buf) => {
    const s = buf.toString();
    if (VERBOSE) process.stderr.write(`[server:${port}] ${s}`);
    server.output += s;
    if (server.output.length > 2_000_000) server.output = server.output.slice(-1_000_000);
  };
  proc.stdout.on('data', append);
  proc.stderr.on('data', append);
  server.exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      live.delete(proc);
      server.exit = { code, signal };
      resolve(server.exit);
    });
    proc.on('error', (err) => {
      live.delete(proc);
      server.exit = { code: null, signal: null, error: err };
      resolve(server.exit);
    });
  });

  const deadline = Date.now() + 20_000;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (server.exit) break;
    try {
      const res = await fetch(`${server.url}/health`, { signal: AbortSignal.timeout(1000) });
      const text = await res.text();
      if (res.status === 200) return server;
      last = `HTTP ${res.status}: ${text.slice(0, 500)}`;
    } catch (e) {
      last = e.cause?.code || e.message;
    }
    await sleep(100);
  }
  if (!server.exit) {
    proc.kill('SIGKILL');
    await server.exited;
    server.exit.killedByHarness = true;
  }
  const pgHint =
    server.backend === 'postgres'
      ? `\nPostgreSQL variant: is PostgreSQL reachable at REALTIME_TEST_DATABASE_URL=${PG_BASE}? ` +
        '(set REALTIME_TEST_DATABASE_URL to a reachable server, or REALTIME_TEST_SERVICES=skip to skip these tests)'
      : '';
  const why = server.exit && !server.exit.killedByHarness ? 'server process exited before it became ready' : 'server did not become ready (GET /health → 200) within 20 s';
  throw new Error(
    `${why}; last: ${last}; ` +
      `exit: ${show(server.exit)}${pgHint}\n--- server output ---\n${server.logs()}\n--- end ---`,
  );
}

export function closeClients(server) {
  for (const s of server.clients) {
    try {
      s.disconnect();
    } catch {}
  }
  server.clients.clear();
}

/** SIGTERM, wait for exit, assert exit code 0 (unless opts.assertExit === false). */
async function stopServer(server, { assertExit = true, timeoutMs = 10_000, closeClientsFirst = true } = {}) {
  if (closeClientsFirst) closeClients(server);
  const proc = server.proc;
  if (!proc) return null;
  if (!server.exit) {
    proc.kill('SIGTERM');
    const t = setTimeout(() => {
      if (!server.exit) proc.kill('SIGKILL');
    }, timeoutMs);
    await server.exited;
    clearTimeout(t);
  }
  const exit = server.exit;
  server.proc = null;
  if (assertExit) {
    assert.ok(
      exit.code === 0,
      `server should exit 0 after SIGTERM (within ${timeoutMs} ms), got ${show(exit)}\n${firstPanic(server.output)}--- server output ---\n${server.logs(4000)}`,
    );
  }
  return exit;
}

/** The first panic in a server's output (message and the top of its backtrace), or ''. */
function firstPanic(output) {
  const at = output.indexOf('panicked at');
  if (at < 0) return '';
  const start = output.lastIndexOf('\n', at) + 1;
  return `--- first panic ---\n${output.slice(start, start + 3000)}\n`;
}

async function cleanupServer(server) {
  closeClients(server);
  if (server.proc && !server.exit) {
    server.proc.kill('SIGKILL');
    await server.exited;
  }
  try {
    if (!server.ownDataDir) rmSync(server.dataDir, { recursive: true, force: true });
  } catch {}
  if (server.dbName) dropPgDatabase(server.dbName);
}

/** Stop (asserting exit 0) and clean up; for after() hooks. Also checks the contract's
 *  "never emit events named reconnect*" over everything any client of this server received. */
export async function shutdown(server) {
  if (!server) return;
  try {
    if (server.proc) await server.stop();
  } finally {
    await server.cleanup();
  }
  assertNoReconnectEvents(server);
}

export function assertNoReconnectEvents(server) {
  const bad = server.everySocket.flatMap((s) => s.received.filter((r) => r.event.startsWith('reconnect')));
  assert.equal(bad.length, 0, `the server must never emit events named reconnect*: ${show(bad)}`);
}

// ---------------------------------------------------------------------------------------------
// clients

/**
 * Create a socket.io client (not waiting for anything). Every received event is recorded in
 * socket.received = [{event, args, at}] (used by countEvents and by failure messages).
 */
export function makeClient(server, opts = {}) {
  const auth = { ...(opts.auth || {}) };
  if (opts.token !== undefined) auth.token = opts.token;
  if (opts.account !== undefined) auth.sourceAccountId = opts.account;
  const socket = io(server.url, {
    forceNew: true,
    reconnection: false,
    transports: opts.transports || ['websocket'],
    upgrade: opts.upgrade ?? true,
    auth,
    query: opts.query,
    extraHeaders: opts.extraHeaders,
    timeout: 15_000, // socket.io-client's handshake timeout: a debug server on a loaded 2-core machine can take seconds
    autoConnect: opts.autoConnect ?? true,
  });
  socket.received = [];
  socket.onAny((event, ...args) => socket.received.push({ event, args, at: Date.now() }));
  server.clients.add(socket);
  server.everySocket.push(socket);
  return socket;
}

/**
 * Connect and wait for `authenticated` (or, with opts.anonymous, for `connected`).
 * Resolves {socket, authenticated, connected, order}; rejects on connect_error.
 * opts: {token, user (mints a token), claims, account, transports, query, extraHeaders, auth, onConnect}
 */
export function connectClient(server, opts = {}) {
  const o = { ...opts };
  if (o.token === undefined && o.user) o.token = mintToken(o.user, o.claims || {});
  const socket = makeClient(server, { ...o, autoConnect: false });
  const order = [];
  return new Promise((resolve, reject) => {
    let connected = null;
    const timer = setTimeout(() => {
      cleanup();
      socket.disconnect();
      reject(
        new Error(
          `client (${o.user || 'token'}) did not get ${o.anonymous ? '`connected`' : '`authenticated`'} within 20 s; ` +
            `socket.connected=${socket.connected}; events received: ${show(socket.received)}`,
        ),
      );
    }, 20_000);
    const cleanup = () => {
      clearTimeout(timer);
      socket.off('connected', onConnected);
      socket.off('authenticated', onAuth);
      socket.off('connect_error', onErr);
    };
    const onConnected = (p) => {
      order.push('connected');
      connected = p;
      if (o.anonymous) {
        cleanup();
        resolve({ socket, connected, authenticated: null, order });
      }
    };
    const onAuth = (p) => {
      order.push('authenticated');
      if (o.anonymous) return;
      cleanup();
      resolve({ socket, connected, authenticated: p, order });
    };
    const onErr = (err) => {
      cleanup();
      socket.disconnect();
      const e = new Error(`connect_error: ${err.message}${err.data ? ` data=${show(err.data)}` : ''}`);
      e.connectError = err;
      reject(e);
    };
    socket.on('connected', onConnected);
    socket.on('authenticated', onAuth);
    socket.on('connect_error', onErr);
    if (o.onConnect) socket.on('connect', () => o.onConnect(socket));
    socket.connect();
  });
}

/**
 * Expect the handshake to be refused with connect_error; resolves the error message.
 * Fails if the client connects (the contract forbids connect-then-kick).
 */
export function expectConnectError(server, opts = {}) {
  const socket = makeClient(server, { ...opts, autoConnect: false });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.disconnect();
      reject(new Error(`expected connect_error within 20 s, got none; events: ${show(socket.received)}`));
    }, 20_000);
    socket.on('connect', () => {
      // give the server a moment to show what it does (e.g. a kick) for the failure message
      setTimeout(() => {
        clearTimeout(timer);
        const evs = show(socket.received);
        socket.disconnect();
        reject(new Error(`expected the handshake to be refused (connect_error), but the client CONNECTED; events: ${evs}`));
      }, 300);
    });
    socket.on('connect_error', (err) => {
      clearTimeout(timer);
      socket.disconnect();
      resolve(err.message);
    });
    socket.connect();
  });
}

/** Emit with an ack; resolves the ack's first argument; rejects with a clear message on timeout. */
export function emitAck(socket, event, payload, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const cb = (err, res) => {
      if (err) reject(new Error(`no ack for ${event} ${show(payload, 300)} within ${timeoutMs} ms (socket.connected=${socket.connected}); recent events: ${show(socket.received.slice(-5), 800)}`));
      else resolve(res);
    };
    if (payload === undefined) socket.timeout(timeoutMs).emit(event, cb);
    else socket.timeout(timeoutMs).emit(event, payload, cb);
  });
}

/** Wait for a future event matching predicate; on timeout the message lists what arrived instead. */
export function waitFor(socket, event, predicate = () => true, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const startIdx = socket.received.length;
    const handler = (...args) => {
      let ok = false;
      try {
        ok = predicate(...args);
      } catch {}
      if (ok) {
        clearTimeout(timer);
        socket.off(event, handler);
        resolve(args[0]);
      }
    };
    const timer = setTimeout(() => {
      socket.off(event, handler);
      const same = socket.received.slice(startIdx).filter((r) => r.event === event).map((r) => r.args[0]);
      const others = socket.received.slice(startIdx).map((r) => r.event);
      reject(
        new Error(
          `timed out after ${timeoutMs} ms waiting for '${event}' matching ${predicate.toString().slice(0, 160)}; ` +
            `'${event}' payloads received meanwhile: ${show(same)}; all events meanwhile: ${show(others)}; connected=${socket.connected}`,
        ),
      );
    }, timeoutMs);
    socket.on(event, handler);
  });
}

/**
 * Wait ms, then assert that no `event` matching predicate was received by this socket — over its
 * whole recorded history by default (so an event that arrived before the call counts too), or
 * from index `from` (take it from socket.received.length before the action).
 */
export async function expectNoEvent(socket, event, ms = 700, predicate = () => true, { from = 0 } = {}) {
  const start = from;
  await sleep(ms);
  const bad = socket.received.slice(start).filter((r) => {
    if (r.event !== event) return false;
    try {
      return predicate(...r.args);
    } catch {
      return false;
    }
  });
  assert.equal(bad.length, 0, `expected no '${event}' within ${ms} ms, got: ${show(bad.map((b) => b.args))}`);
}

/** Count recorded events (since the client connected) matching predicate. */
export function countEvents(socket, event, predicate = () => true) {
  return socket.received.filter((r) => r.event === event && predicate(...r.args)).length;
}

export function eventsOf(socket, event, predicate = () => true) {
  return socket.received.filter((r) => r.event === event && predicate(...r.args)).map((r) => r.args[0]);
}

export function waitDisconnect(socket, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    if (!socket.connected) return resolve('already disconnected');
    const t = setTimeout(() => reject(new Error(`socket not disconnected within ${timeoutMs} ms`)), timeoutMs);
    socket.once('disconnect', (reason) => {
      clearTimeout(t);
      resolve(reason);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// ack assertions

/** Assert {success:true, data?}; returns data. */
export function assertOk(ack, what = 'ack') {
  assert.ok(ack && typeof ack === 'object' && ack.success === true, `${what}: expected {success:true,...}, got ${show(ack)}`);
  return ack.data;
}

/** Assert {success:false, error:{code, message}} with code in `codes`; returns error. */
export function assertErr(ack, codes, what = 'ack') {
  const list = Array.isArray(codes) ? codes : [codes];
  assert.ok(
    ack && typeof ack === 'object' && ack.success === false && ack.error && typeof ack.error === 'object',
    `${what}: expected {success:false,error:{code,message}} with code ${list.join('|')}, got ${show(ack)}`,
  );
  assert.ok(list.includes(ack.error.code), `${what}: expected error.code ${list.join('|')}, got ${show(ack)}`);
  assert.equal(typeof ack.error.message, 'string', `${what}: error.message must be a string, got ${show(ack)}`);
  return ack.error;
}

export function assertIso(v, what) {
  assert.ok(typeof v === 'string' && ISO_MS.test(v) && !Number.isNaN(Date.parse(v)), `${what}: expected an ISO-8601 UTC string with milliseconds, got ${show(v)}`);
}

// ---------------------------------------------------------------------------------------------
// HTTP

/** fetch JSON; resolves {status, headers, body (parsed JSON or text), text}. */
export async function http(server, method, p, { body, headers = {}, apiKey, app } = {}) {
  const h = { ...headers };
  if (apiKey) h['X-API-Key'] = apiKey;
  if (app) h['X-App-Name'] = app;
  if (body !== undefined) h['Content-Type'] = 'application/json';
  const res = await fetch(`${server.url}${p}`, {
    method,
    headers: h,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const text = await res.text();
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {}
  return { status: res.status, headers: res.headers, body: parsed, text };
}

/** A list from an admin response: a bare array, or {rooms|connections|items|data: [...]}. */
export function listOf(body, key) {
  if (Array.isArray(body)) return body;
  if (body && typeof body === 'object') {
    for (const k of [key, 'items', 'data', 'results']) {
      if (Array.isArray(body[k])) return body[k];
      if (body[k] && typeof body[k] === 'object' && Array.isArray(body[k][key])) return body[k][key];
    }
  }
  return null;
}

/** Join a room and assert success; returns ack data. */
export async function join(socket, roomName, extra = {}) {
  const ack = await emitAck(socket, 'room:join', { roomName, ...extra });
  return assertOk(ack, `room:join ${roomName}`);
}

/**
 * Send a fresh message from `sender` to `roomName` and wait until `receiver` has it. Broadcasts to one
 * socket go out in the order the server emits them, so any event the server emitted to `receiver`
 * before this message (for example the broadcast of a refused or duplicate send whose ack already
 * arrived) is in receiver.received once this resolves: an event-driven replacement for "wait a bit
 * and check nothing came".
 */
export async function barrier(sender, receiver, roomName, timeoutMs = 10_000) {
  const content = uid('barrier');
  const got = waitFor(receiver, 'message:new', (m) => m && m.content === content, timeoutMs);
  assertOk(await emitAck(sender, 'message:send', { roomName, content }, timeoutMs), `barrier message:send to ${roomName}`);
  await got;
}

/** Poll `check` (async, returns a truthy value when done) until it succeeds; fails with `what` and the last value. */
export async function eventually(what, check, { timeoutMs = 10_000, intervalMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await check();
    if (last && last.done !== false) return last;
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${show(last)}`);
    await sleep(intervalMs);
  }
}

// ---------------------------------------------------------------------------------------------
// the server's database, from the outside

/** The server's SQLite file (sqlite backend). */
export function sqlitePath(server) {
  return path.join(server.dataDir, 'realtime.db');
}

/**
 * Run SQL against the server's own database (psql for postgres, sqlite3 for sqlite) and return
 * stdout (unaligned, tuples only, '|' between columns). Fails, with stderr, on a non-zero exit.
 */
export function sql(server, query, { timeoutMs = 15_000 } = {}) {
  const [cmd, args] = server.backend === 'postgres'
    ? ['psql', [server.databaseUrl, '-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-c', query]]
    : ['sqlite3', ['-batch', '-bail', '-cmd', '.timeout 10000', sqlitePath(server), query]];
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs });
  if (r.error) throw new Error(`${cmd} failed to run (${r.error.message}); is it installed?`);
  assert.equal(r.status, 0, `${cmd} ${show(query, 300)} exited ${r.status}: ${r.stderr}`);
  return r.stdout.trim();
}

/**
 * Hold the write lock of the server's database for `ms` from the outside: PostgreSQL locks the
 * given tables IN EXCLUSIVE MODE (reads go on, writes to them wait), SQLite takes the database's
 * write lock (BEGIN IMMEDIATE; readers go on, every writer waits, up to its busy_timeout of 5 s).
 * (`mode` 'ACCESS EXCLUSIVE' makes readers of those tables wait too: PostgreSQL only.)
 * Resolves once the lock is held, with {released: Promise<exit code>} settling when it is let go.
 */
export async function holdWriteLock(server, { tables, ms, mode = 'EXCLUSIVE' }) {
  const secs = (ms / 1000).toFixed(2);
  const [cmd, args, script] = server.backend === 'postgres'
    ? ['psql', [server.databaseUrl, '-X', '-q', '-v', 'ON_ERROR_STOP=1'],
      `BEGIN;\nLOCK TABLE ${tables.join(', ')} IN ${mode} MODE;\n\\echo locked\nSELECT pg_sleep(${secs});\nCOMMIT;\n`]
    : ['sqlite3', ['-batch', '-bail', sqlitePath(server)], `.timeout 10000\nBEGIN IMMEDIATE;\n.print locked\n.shell sleep ${secs}\nCOMMIT;\n`];
  const proc = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const released = new Promise((resolve) => proc.on('exit', (code) => resolve(code)));
  const locked = new Promise((resolve, reject) => {
    proc.stdout.on('data', (b) => {
      out += b.toString();
      if (out.includes('locked')) resolve();
    });
    proc.stderr.on('data', (b) => { err += b.toString(); });
    proc.on('exit', (code) => reject(new Error(`${cmd} ended (exit ${code}) before it held the lock: ${err}`)));
  });
  proc.stdin.end(script);
  await locked;
  return { released: released.then((code) => { assert.equal(code, 0, `${cmd} holding the lock exited ${code}: ${err}`); return code; }) };
}
