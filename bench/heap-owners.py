#!/usr/bin/env python3
"""Heap per connection by owner, from a heaptrack recording of a server killed while it held N connections.

Usage:
  heaptrack -o /tmp/h nself-realtime server run &          # as in run.sh; then, against it:
  nself-realtime bench --server-pid $PID idle -n 2000 --duration 60s --rooms 40 --joins 3 &
  # once the bench prints "hold": kill -9 the server (the allocations never freed are what it held)
  heaptrack_print -f /tmp/h.zst --flamegraph-cost-type leaked -F /tmp/h.fg
  bench/heap-owners.py /tmp/h.fg 2000 [K]                  # K: also print the K largest unowned stacks

Each stack is given to the first owner (in the order below) one of its frames matches; BENCHMARKS.md
("Memory per connection") shows the table it made for 2,000 connections in 3 rooms each.
"""
import sys,re,collections
N=int(sys.argv[2])
# (owner, regex on a frame), checked leaf→root; the first frame that matches names the owner
owners=[
 ('engineioxide: packet queue (tokio mpsc blocks; since the queue patch a VecDeque, freed when drained)', r'^new<> \(block\.rs\)|\(queue\.rs\)'),
 ('hyper: HTTP/1 read buffer kept by the upgraded connection', r'poll_read_from_io'),
 ('tungstenite: write buffer (released once written since the tungstenite patch)', r'buffer_frame'),
 ('tungstenite: read buffer (released while nothing is to be read since the tungstenite patch)', r'from_raw_socket|^read_in<> \(mod\.rs\)'),
 # (the headers engineioxide rebuilds are allocated inside the task's spawn: named before the task)
 ('the opening request kept with the session (URI, headers, extensions)', r'without_handshake_keys'),
 ('task: engineioxide heartbeat', r'spawn_heartbeat'),
 ('task: engineioxide WebSocket reader (since the task patch: reader, writer and heartbeat)', r'dispatch_req'),
 ('task: engineioxide WebSocket writer (a task of its own before the task patch)', r'bind_new_task'),
 ('engineioxide: socket, its channels, the WebSocket lock', r'create_session|bilock'),
 ('tokio: socket registration', r'add_source|registration_set'),
 ('SQLite page cache (bounded, shared)', r'sqlite3'),
 ('ours: presence tracker', r'\(presence\.rs\)'),
 ('ours: roster', r'\(roster\.rs\)'),
 ('ours: rate limiter', r'\(ratelimit\.rs\)'),
 ('the opening request kept with the session (URI, headers, extensions)', r'detach_from_read_buffer|insert_url_params|\(path_router\.rs\)|prepare_upgrade|^poll_catch<> \(dispatch\.rs\)|^call<> \(map_request\.rs\)'),
 ('socketioxide: room index (rooms → sockets)', r'add_all|^join<> \(socket\.rs\)'),
 # hyper has a dispatch.rs too (its frames are generic, `poll_…<>`); ours are not
 ('ours: event queue (dispatch)', r'^(call|drain|handle|answer|answer_error|\{async_fn#\d+\}) \(dispatch\.rs\)'),
 ('socketioxide: socket and its extensions (our Conn, Session)', r'\(extensions\.rs\)|\(ns\.rs\)|\(client\.rs\)|\(connect\.rs\)'),
 ('ours: other (connections, rooms, ledger)', r'\((connections|rooms|session|ledger|names|conn)\.rs\)'),
]
owners=[(n,re.compile(r)) for n,r in owners]
tot=collections.Counter(); un=[]
for l in open(sys.argv[1]):
    stack,_,cost=l.rstrip('\n').rpartition(' ')
    c=int(cost); fr=stack.split(';')[::-1]
    hit=next((n for n,r in owners if any(r.search(f) for f in fr)),None)
    if hit: tot[hit]+=c
    else:
        tot['other']+=c; un.append((c,fr))
T=sum(tot.values())
for n in dict.fromkeys(n for n,_ in owners+[('other',None)]):
    if tot[n]: print(f"| {n} | {tot[n]/N:,.0f} |")
print(f"| total heap per connection | {T/N:,.0f} |")
if len(sys.argv)>3:
    un.sort(reverse=True)
    for c,fr in un[:int(sys.argv[3])]:
        print(round(c/N),' :: ',' <- '.join(fr[:25])[:900]);print()
