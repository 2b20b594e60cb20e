//! The storage guarantees, on SQLite and on the local PostgreSQL: gap-free per-room seqs under concurrent
//! writers, idempotent sends, and sync pages that never skip a message committed during a sync.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use nself_realtime::config::Database;
use nself_realtime::domain::names::RoomName;
use nself_realtime::domain::policy::Visibility;
use nself_realtime::store::rooms::NewRoom;
use nself_realtime::store::writer::{MessageWriter, WriteOp, WriteOutcome};
use nself_realtime::store::{NewMessage, Store};

/// Runs `f` against a fresh SQLite file and a fresh PostgreSQL database.
fn on_both<F, Fut>(what: &str, f: F)
where
    F: Fn(Store) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Database::Sqlite { path: dir.path().join("realtime.db") };
    tokio::runtime::Runtime::new().unwrap().block_on(async { f(Store::open(&sqlite).await.unwrap()).await });
    if let Some(db) = common::TestDb::new(what) {
        let pg = Database::Postgres { url: db.url.clone() };
        tokio::runtime::Runtime::new().unwrap().block_on(async { f(Store::open(&pg).await.unwrap()).await });
    }
}

async fn room(store: &Store, name: &str) {
    let r = NewRoom { name, kind: "channel", visibility: Visibility::Public, max_members: None, created_by: None };
    store.create_room("acct", &r).await.unwrap();
}

fn message(room: &str, user: &str, content: &str, client_id: Option<&str>) -> WriteOp {
    WriteOp::Insert(NewMessage {
        id: uuid::Uuid::now_v7().to_string(),
        account: "acct".into(),
        room: room.into(),
        user_id: user.into(),
        kind: "text".into(),
        content: content.into(),
        thread_id: None,
        reply_to: None,
        metadata: None,
        mentions: None,
        attachments: None,
        client_message_id: client_id.map(str::to_string),
        checked_room: None,
    })
}

#[test]
fn concurrent_sends_get_gap_free_seqs_per_room() {
    on_both("seq test on PostgreSQL", |store| async move {
        room(&store, "a").await;
        room(&store, "b").await;
        let writer = Arc::new(MessageWriter::spawn(store.clone(), 16));
        let mut tasks = Vec::new();
        for i in 0..200 {
            let w = writer.clone();
            let r = if i % 2 == 0 { "a" } else { "b" };
            tasks.push(tokio::spawn(async move { w.submit(message(r, "u1", &format!("m{i}"), None)).await.unwrap() }));
        }
        let mut seqs = std::collections::HashMap::<String, Vec<i64>>::new();
        for t in tasks {
            match t.await.unwrap() {
                WriteOutcome::Inserted(m) => seqs.entry(m.room).or_default().push(m.seq),
                other => panic!("expected an insert, got {other:?}"),
            }
        }
        for (room, mut s) in seqs {
            s.sort();
            assert_eq!(s, (1..=100).collect::<Vec<_>>(), "room {room}: seqs must be 1..=100 without gaps");
        }
    });
}

#[test]
fn a_retried_client_message_id_is_stored_once() {
    on_both("idempotency test on PostgreSQL", |store| async move {
        room(&store, "a").await;
        let writer = Arc::new(MessageWriter::spawn(store.clone(), 8));
        // The same clientMessageId sent five times at once (a reconnecting offline queue).
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let w = writer.clone();
                tokio::spawn(async move { w.submit(message("a", "u1", "hello", Some("c-1"))).await.unwrap() })
            })
            .collect();
        let mut ids = HashSet::new();
        let mut inserted = 0;
        for t in tasks {
            match t.await.unwrap() {
                WriteOutcome::Inserted(m) => {
                    inserted += 1;
                    ids.insert(m.id);
                }
                WriteOutcome::Duplicate(m) => {
                    ids.insert(m.id);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(inserted, 1, "exactly one insert");
        assert_eq!(ids.len(), 1, "every retry answers the same messageId");
        // The same client id from another user is another message.
        assert!(matches!(
            writer.submit(message("a", "u2", "hi", Some("c-1"))).await.unwrap(),
            WriteOutcome::Inserted(_)
        ));
        assert_eq!(store.count_messages("acct").await.unwrap(), 2);
    });
}

#[test]
fn a_sync_during_a_burst_never_skips_a_message() {
    on_both("sync gap test on PostgreSQL", |store| async move {
        room(&store, "a").await;
        let writer = Arc::new(MessageWriter::spawn(store.clone(), 8));
        let sender = {
            let w = writer.clone();
            tokio::spawn(async move {
                for i in 0..300 {
                    w.submit(message("a", "u1", &format!("m{i}"), None)).await.unwrap();
                }
            })
        };
        // Poll the way a client does: since = the previous serverTime, inclusive.
        let mut seen = HashSet::new();
        let mut since = 0;
        loop {
            let done = sender.is_finished();
            let server_time = writer.safe_server_time();
            let page = store.sync_messages("acct", "a", since, 0, 1000).await.unwrap();
            seen.extend(page.messages.iter().map(|m| m.seq));
            since = server_time;
            if done {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        sender.await.unwrap();
        let page = store.sync_messages("acct", "a", since, 0, 1000).await.unwrap();
        seen.extend(page.messages.iter().map(|m| m.seq));
        let missing: Vec<i64> = (1..=300).filter(|s| !seen.contains(s)).collect();
        assert!(missing.is_empty(), "sync skipped seqs {missing:?}");
    });
}

/// Holds the writer: a transaction of the test's own updates room `held`, so the writer's next batch waits
/// (SQLite: for the write lock; PostgreSQL: for the room row) while more writes queue up behind it and then
/// go together in one batch.
async fn hold_writer(store: &Store) -> sqlx::Transaction<'static, sqlx::Any> {
    room(store, "held").await;
    let mut txn = store.begin_write().await.unwrap();
    sqlx::query(
        "UPDATE np_realtime_rooms SET updated_at = updated_at WHERE source_account_id = 'acct' AND name = 'held'",
    )
    .execute(&mut *txn)
    .await
    .unwrap();
    txn
}

fn checked(room: &str, user: &str, content: &str, client_id: Option<&str>) -> WriteOp {
    let mut op = message(room, user, content, client_id);
    if let WriteOp::Insert(m) = &mut op {
        m.checked_room = Some(RoomName::parse(room).unwrap());
    }
    op
}

#[test]
fn one_batch_answers_each_send_as_if_sent_alone() {
    on_both("batched sends test on PostgreSQL", |store| async move {
        room(&store, "a").await;
        room(&store, "b").await;
        for (r, u) in [("a", "u1"), ("b", "u1"), ("a", "u2"), ("a", "muted")] {
            store.add_member("acct", r, u, "member").await.unwrap();
        }
        store.set_member_flags("acct", "a", "muted", None, Some(true), None).await.unwrap();
        let writer = MessageWriter::spawn(store.clone(), 100);
        let txn = hold_writer(&store).await;
        let first = writer.enqueue(message("held", "u0", "waits for the test", None)).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        // These queue up while the writer waits, and go in its next batch together.
        let ops = [
            checked("a", "u1", "one", Some("c-1")),
            checked("a", "u1", "again", Some("c-1")), // a retry of the first, in the same batch
            checked("a", "stranger", "no", Some("c-9")),
            checked("a", "muted", "no", None),
            checked("b", "u1", "two", None),
            checked("a", "u2", "three", Some("c-1")), // the same clientMessageId from another user
            checked("nowhere", "u1", "no", None),
            message("missing", "u1", "no such room", None),
            checked("b", "u1", "four", Some("c-2")),
        ];
        let queued: Vec<_> = ops.into_iter().map(|op| writer.enqueue(op).unwrap()).collect();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        txn.rollback().await.unwrap();
        assert!(matches!(first.committed().await.unwrap(), WriteOutcome::Inserted(_)));
        let mut answers = Vec::new();
        for q in queued {
            answers.push(q.committed().await);
        }
        let inserted = |i: usize| match &answers[i] {
            Ok(WriteOutcome::Inserted(m)) => m.clone(),
            other => panic!("send {i}: expected an insert, got {other:?}"),
        };
        let code = |i: usize| match &answers[i] {
            Err(e) => e.code,
            other => panic!("send {i}: expected a refusal, got {other:?}"),
        };
        let one = inserted(0);
        match &answers[1] {
            Ok(WriteOutcome::Duplicate(m)) => assert_eq!(m, &one, "the retry answers the original"),
            other => panic!("the retry: expected a duplicate, got {other:?}"),
        }
        use nself_realtime::error::ErrorCode;
        assert_eq!(code(2), ErrorCode::NotAMember);
        assert_eq!(code(3), ErrorCode::Forbidden);
        assert_eq!(code(6), ErrorCode::NotAMember);
        assert!(matches!(answers[7], Ok(WriteOutcome::NotFound)), "{:?}", answers[7]);
        // Seqs per room in queue order, without gaps.
        assert_eq!((one.room.as_str(), one.seq), ("a", 1));
        assert_eq!((inserted(5).room.as_str(), inserted(5).seq), ("a", 2));
        assert_eq!((inserted(4).room.as_str(), inserted(4).seq), ("b", 1));
        assert_eq!((inserted(8).room.as_str(), inserted(8).seq), ("b", 2));
        assert_eq!(store.count_messages("acct").await.unwrap(), 5);
        // A retry in a later batch answers the same original.
        match writer.submit(checked("a", "u1", "later", Some("c-1"))).await.unwrap() {
            WriteOutcome::Duplicate(m) => assert_eq!(m, one),
            other => panic!("expected a duplicate, got {other:?}"),
        }
    });
}

#[test]
fn a_burst_of_one_user_does_not_stand_ahead_of_another_users_message() {
    on_both("writer fairness test on PostgreSQL", |store| async move {
        room(&store, "a").await;
        let writer = MessageWriter::spawn(store.clone(), 100);
        let share = nself_realtime::store::writer::user_share(100) as i64;
        // 300 queued by u1 at once (a whole budget's worth), then one of u2 behind them
        let burst: Vec<_> =
            (0..300).map(|i| writer.enqueue(message("a", "u1", &format!("b{i}"), None)).unwrap()).collect();
        let quiet = writer.enqueue(message("a", "u2", "quiet", None)).unwrap();
        let seq = |o: WriteOutcome| match o {
            WriteOutcome::Inserted(m) => m.seq,
            other => panic!("not inserted: {other:?}"),
        };
        let quiet = seq(quiet.committed().await.unwrap());
        let mut burst_seqs = Vec::new();
        for q in burst {
            burst_seqs.push(seq(q.committed().await.unwrap()));
        }
        // One room, so seqs are the commit order. u2's message goes in the batch after the one in progress
        // when it came, each holding at most `share` of the burst (2 × share + 1; the bound leaves room for a
        // writer that took batches while the burst was still being queued); in arrival order it was 301.
        assert!(quiet <= 4 * share + 1, "u2's message committed as seq {quiet}, behind the burst");
        // u1's messages committed in the order they were queued
        assert!(burst_seqs.windows(2).all(|w| w[0] < w[1]), "u1's order: {burst_seqs:?}");
        assert_eq!(burst_seqs.len() + 1, 301);
    });
}

#[test]
fn pages_are_oldest_first_and_edits_come_back() {
    on_both("paging test on PostgreSQL", |store| async move {
        room(&store, "a").await;
        let writer = MessageWriter::spawn(store.clone(), 8);
        let mut first = None;
        for i in 0..5 {
            if let WriteOutcome::Inserted(m) = writer.submit(message("a", "u1", &format!("m{i}"), None)).await.unwrap()
            {
                first.get_or_insert(m);
            }
        }
        let page = store.sync_messages("acct", "a", 0, 0, 2).await.unwrap();
        assert_eq!(page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert!(page.has_more);
        let page = store.sync_messages("acct", "a", 0, 2, 10).await.unwrap();
        assert_eq!(page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert!(!page.has_more);

        let since = writer.safe_server_time() + 1;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let first = first.unwrap();
        let op = WriteOp::Change {
            account: "acct".into(),
            user: "u1".into(),
            id: first.id.clone(),
            content: Some("edited".into()),
        };
        assert!(matches!(writer.submit(op).await.unwrap(), WriteOutcome::Changed(_)));
        let page = store.sync_messages("acct", "a", since, 0, 10).await.unwrap();
        assert_eq!(page.messages.len(), 1, "only the edit is newer than since");
        assert_eq!(page.messages[0].content, "edited");
        assert!(page.messages[0].edited_at.is_some());
    });
}

#[test]
fn the_ledger_writes_a_connection_storm_and_its_audit_events() {
    use nself_realtime::store::connections::{ConnectionOpen, ConnectionRow};
    use nself_realtime::store::events::EventRow;
    use nself_realtime::store::ledger::{Ledger, Record};
    on_both("ledger", |store| async move {
        let ledger = Ledger::spawn(store.clone());
        // more rows than one statement and one batch hold; every other socket closes again
        for i in 0..1_200 {
            let sid = format!("s{i}");
            ledger.record(Record::Open(ConnectionOpen {
                row: ConnectionRow {
                    socket_id: sid.clone(),
                    account: "acct".into(),
                    user_id: Some(format!("u{i}")),
                    node_id: "n1".into(),
                    ip: Some("127.0.0.1".into()),
                    transport: Some("websocket".into()),
                    device_type: None,
                    device_os: None,
                    device_browser: None,
                    connected_at: 1_000 + i,
                },
                user_agent: Some("test".into()),
            }));
            ledger.record(Record::Event(EventRow {
                id: None,
                account: "acct".into(),
                event_type: "connect".into(),
                user_id: Some(format!("u{i}")),
                socket_id: Some(sid.clone()),
                room_name: None,
                payload: None,
                ip: None,
                created_at: 1_000 + i,
            }));
            if i % 2 == 1 {
                ledger.record(Record::Close { socket_id: sid, at: 2_000 + i, reason: "transport close".into() });
            }
        }
        ledger.flush().await;
        let open = store.open_connections(Some("acct"), 10_000).await.unwrap();
        assert_eq!(open.len(), 600, "the closed half must be marked closed");
        assert!(open.iter().all(|c| c.socket_id[1..].parse::<u32>().unwrap() % 2 == 0));
        let events = store.events(Some("acct"), 10_000).await.unwrap();
        assert_eq!(events.len(), 1_200);
        assert_eq!(store.close_stale_connections(Some("n1"), "stopped").await.unwrap(), 600);
    });
}

#[test]
fn retention_removes_old_messages_in_chunks_with_their_receipts_and_reactions() {
    on_both("retention", |store| async move {
        room(&store, "old").await;
        let writer = MessageWriter::spawn(store.clone(), 64);
        let mut ids = Vec::new();
        for i in 0..2_100 {
            if let WriteOutcome::Inserted(m) =
                writer.submit(message("old", "u1", &format!("m{i}"), None)).await.unwrap()
            {
                ids.push(m.id);
            }
        }
        assert_eq!(ids.len(), 2_100);
        // age all but the last message past a one-day retention
        sqlx::query("UPDATE np_realtime_messages SET created_at = 0 WHERE id <> $1")
            .bind(ids.last().unwrap())
            .execute(&store.pool)
            .await
            .unwrap();
        store.react("acct", &ids[0], "u2", "👍", true).await.unwrap();
        store.save_deliveries(&[("acct".into(), ids[0].clone(), "u2".into(), 1)]).await.unwrap();
        let (removed, _) = store.prune(1, 0).await.unwrap();
        assert_eq!(removed, 2_099, "more than one chunk of 1,000");
        assert_eq!(store.count_messages("acct").await.unwrap(), 1, "the recent message stays");
        for table in ["np_realtime_reactions", "np_realtime_deliveries"] {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&store.pool)
                .await
                .unwrap();
            assert_eq!(n, 0, "{table} rows of pruned messages must go too");
        }
    });
}

#[test]
fn a_crash_leaves_last_seen_at_the_restart_for_users_still_connected() {
    use nself_realtime::store::connections::{ConnectionOpen, ConnectionRow};
    use nself_realtime::store::ledger::{Ledger, Record};
    on_both("last seen after a crash", |store| async move {
        let ledger = Ledger::spawn(store.clone());
        for (sid, user) in [("s1", "u1"), ("s2", "u2")] {
            ledger.record(Record::Open(ConnectionOpen {
                row: ConnectionRow {
                    socket_id: sid.into(),
                    account: "acct".into(),
                    user_id: Some(user.into()),
                    node_id: "n1".into(),
                    ip: None,
                    transport: None,
                    device_type: None,
                    device_os: None,
                    device_browser: None,
                    connected_at: 1,
                },
                user_agent: None,
            }));
        }
        ledger.flush().await;
        // u2 is invisible and was last seen long ago: that must not move
        sqlx::query(
            "INSERT INTO np_realtime_presence (source_account_id, user_id, status, last_seen_at, invisible_mode, \
             updated_at) VALUES ('acct', 'u2', 'offline', 5, 1, 5)",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        let before = nself_realtime::store::now_ms();
        store.touch_last_seen_of_open_connections(Some("n1")).await.unwrap();
        let rows = store.presence_rows("acct", &["u1".to_string(), "u2".to_string()]).await.unwrap();
        let seen = |u: &str| rows.iter().find(|(id, _)| id == u).and_then(|(_, r)| r.last_seen_at);
        assert!(seen("u1").is_some_and(|t| t >= before), "u1 was connected when the node stopped: {:?}", seen("u1"));
        assert_eq!(seen("u2"), Some(5), "an invisible user's last seen stays");
        assert_eq!(store.close_stale_connections(Some("n1"), "restart").await.unwrap(), 2);
    });
}

#[test]
fn receipt_facts_count_late_joiners_out_of_older_messages() {
    use nself_realtime::domain::receipts::{Member, count};
    on_both("receipt facts on PostgreSQL", |store| async move {
        room(&store, "r").await;
        for u in ["alice", "bob"] {
            store.add_member("acct", "r", u, "member").await.unwrap();
        }
        let writer = MessageWriter::spawn(store.clone(), 16);
        let WriteOutcome::Inserted(first) = writer.submit(message("r", "alice", "one", Some("c1"))).await.unwrap()
        else {
            panic!("inserted")
        };
        store.add_member("acct", "r", "carol", "member").await.unwrap();
        let WriteOutcome::Inserted(second) = writer.submit(message("r", "alice", "two", None)).await.unwrap() else {
            panic!("inserted")
        };
        store.save_watermarks(&[("acct".into(), "r".into(), "bob".into(), second.seq, 0)]).await.unwrap();
        store.save_deliveries(&[("acct".into(), first.id.clone(), "carol".into(), 0)]).await.unwrap();

        // By server id and by the sender's own client id; a stranger's client id matches nothing.
        let ids = vec![first.id.clone(), "c1".to_string(), second.id.clone(), "nope".to_string()];
        let facts = store.receipt_facts("acct", "alice", &ids).await.unwrap();
        assert_eq!(facts.messages.len(), 2);
        assert!(store.receipt_facts("acct", "bob", &["c1".to_string()]).await.unwrap().messages.is_empty());
        let members = &facts.members["r"];
        assert_eq!(members.len(), 3);
        let counts = |m: &nself_realtime::store::MessageRow| {
            count(
                &m.user_id,
                m.seq,
                members.iter().map(|(w, off)| Member {
                    user: &w.user_id,
                    since_seq: w.joined_seq,
                    read_seq: w.read_seq,
                    delivered: facts.delivered.contains(&(m.id.clone(), w.user_id.clone())),
                    receipts_off: *off,
                }),
            )
        };
        let c = counts(&first);
        assert_eq!((c.total, c.read, c.delivered), (1, 1, 1), "carol joined after the first message");
        let c = counts(&second);
        assert_eq!((c.total, c.read, c.delivered), (2, 1, 1));
    });
}

#[test]
fn sessions_ended_together_are_stored_in_one_batch() {
    use nself_realtime::store::presence::PresenceWrite;
    on_both("presence batch test on PostgreSQL", |store| async move {
        // alice was seen before; the batch must keep her custom status and not erase her last seen.
        store.save_presence("acct", "alice", "online", (Some("lunch"), Some("🍕"), None), Some(1_000)).await.unwrap();
        let users: Vec<String> = (0..1_203).map(|i| format!("u{i}")).collect();
        let mut rows: Vec<PresenceWrite<'_>> = users
            .iter()
            .enumerate()
            .map(|(i, u)| PresenceWrite {
                account: "acct",
                user: u,
                status: "offline",
                custom: (None, None, None),
                last_seen: Some(5_000 + i as i64),
            })
            .collect();
        rows.push(PresenceWrite {
            account: "acct",
            user: "alice",
            status: "offline",
            custom: (Some("lunch"), Some("🍕"), None),
            last_seen: None,
        });
        store.save_presences(&rows).await.unwrap();

        let mut asked = users.clone();
        asked.push("alice".into());
        let stored: std::collections::HashMap<String, _> =
            store.presence_rows("acct", &asked).await.unwrap().into_iter().collect();
        assert_eq!(stored.len(), 1_204, "every user of every chunk of 500 is stored");
        assert_eq!(stored["u0"].last_seen_at, Some(5_000));
        assert_eq!(stored["u1202"].last_seen_at, Some(6_202));
        assert!(stored.values().all(|r| r.status == "offline"));
        let alice = &stored["alice"];
        assert_eq!((alice.last_seen_at, alice.custom_text.as_deref()), (Some(1_000), Some("lunch")));
        store.save_presences(&[]).await.unwrap();
    });
}

#[test]
fn handshakes_loaded_together_get_each_users_own_rooms_and_presence() {
    use nself_realtime::store::arrivals::Arrivals;
    on_both("arrivals test on PostgreSQL", |store| async move {
        for r in ["a", "b", "c"] {
            room(&store, r).await;
        }
        // 70 users: a 64-row statement and a padded one. Rooms in several combinations, some muted, some banned.
        for i in 0..70 {
            let u = format!("u{i}");
            if i % 2 == 0 {
                store.add_member("acct", "a", &u, "member").await.unwrap();
            }
            if i % 3 == 0 {
                store.add_member("acct", "b", &u, "member").await.unwrap();
                store.set_member_flags("acct", "b", &u, None, Some(true), None).await.unwrap();
            }
            if i % 5 == 0 {
                store.add_member("acct", "c", &u, "member").await.unwrap();
                store.set_member_flags("acct", "c", &u, None, None, Some(i % 10 == 0)).await.unwrap();
            }
            if i % 4 == 0 {
                store.save_presence("acct", &u, "away", (Some("lunch"), None, None), Some(1_000 + i)).await.unwrap();
            }
        }
        // The same user names in another account.
        let other =
            NewRoom { name: "z", kind: "channel", visibility: Visibility::Public, max_members: None, created_by: None };
        store.create_room("acct2", &other).await.unwrap();
        store.add_member("acct2", "z", "u1", "member").await.unwrap();

        let arrivals = Arrivals::spawn(store.clone());
        // Every user once, two of them twice, and one of the other account, all at once.
        let asks: Vec<(&str, String, bool)> = (0..70)
            .chain([2, 3])
            .map(|i| ("acct", format!("u{i}"), i % 3 != 1))
            .chain([("acct2", "u1".to_string(), true)])
            .collect();
        let loads = futures_util::future::join_all(asks.iter().map(|(a, u, p)| arrivals.load(a, u, *p))).await;
        for ((account, user, asked), got) in asks.iter().zip(loads) {
            let got = got.unwrap();
            assert_eq!(got.rooms, store.rooms_of_user(account, user).await.unwrap(), "{account}/{user}'s rooms");
            let alone = store.presence_rows(account, std::slice::from_ref(user)).await.unwrap().pop().map(|(_, r)| r);
            let expected = asked.then_some(alone);
            assert_eq!(format!("{:?}", got.presence), format!("{expected:?}"), "{account}/{user}'s presence");
        }
    });
}
