//! Every inbound payload decoder and the token parsing, run over a seed corpus (the payloads the interop
//! tests send) and thousands of deterministic mutations of it: nothing panics, every refusal names its cause.
//! `cargo test --lib wire::fuzz` (FUZZ_ROUNDS=<n> runs more).

use serde_json::{Value, json};

use super::{Dialect, detect, nul_field, outgoing, presence_update, refusal, typing_request};

/// xorshift64*: deterministic, so a failure is reproduced by its round number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn rounds() -> usize {
    std::env::var("FUZZ_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5000)
}

/// Payloads as the interop tests and the nchat clients send them.
fn seeds() -> Vec<Value> {
    vec![
        json!({"roomName": "general", "content": "hello"}),
        json!({"roomName": "general", "content": "hi", "threadId": "t1", "replyTo": "m1", "metadata": {"k": [1, 2]}}),
        json!({"channelId": "c-1", "content": "x", "type": "text", "clientMessageId": "cm-1", "attachments": [], "mentions": ["u1"]}),
        json!({"roomName": "dm:a:b", "roomType": "dm", "threadId": null, "recipientId": "b"}),
        json!({"channelId": "c-1", "isTyping": true}),
        json!({"status": "online"}),
        json!({"status": "away", "customStatus": {"text": "lunch", "emoji": "🍔", "expiresAt": "2030-01-01T00:00:00Z"}}),
        json!({"status": "busy", "customStatus": "meeting", "customEmoji": "📅"}),
        json!({"messageId": "m1", "emoji": "👍"}),
        json!({"messageIds": ["m1", "m2"], "roomName": "general"}),
        json!({"userIds": ["u1", "u2"]}),
        json!({"callId": "call-1", "roomName": "general", "candidate": {"sdpMid": "0"}}),
        json!({"token": "abc", "device": {"type": "web", "os": "linux", "browser": "firefox"}}),
        json!({"protocol": "plugin", "userId": "u1"}),
        json!({"protocol": "socket", "sourceAccountId": "acc"}),
        json!([1, "two", null]),
        json!("a string"),
        json!(42),
        Value::Null,
    ]
}

/// A value no client should send: wrong types, NULs, huge or deep ones.
fn nasty(rng: &mut Rng) -> Value {
    match rng.below(12) {
        0 => Value::Null,
        1 => json!(rng.next() as i64),
        2 => json!(f64::MAX),
        3 => json!(-1),
        4 => json!(true),
        5 => json!("a\u{0000}b"),
        6 => json!("x".repeat(rng.below(70_000))),
        7 => json!("\u{202e}\u{feff}\u{1F600}\r\n\t"),
        8 => {
            let mut v = json!("deep");
            for _ in 0..rng.below(200) {
                v = json!([v]);
            }
            v
        }
        9 => json!({"": {"\u{0000}": []}}),
        10 => Value::Array(vec![json!("a"); 40]),
        _ => json!("2020-13-45T99:99:99Z"),
    }
}

const FIELDS: &[&str] = &[
    "roomName",
    "channelId",
    "content",
    "type",
    "threadId",
    "replyTo",
    "metadata",
    "clientMessageId",
    "attachments",
    "mentions",
    "roomType",
    "recipientId",
    "isTyping",
    "status",
    "customStatus",
    "customEmoji",
    "text",
    "emoji",
    "expiresAt",
    "messageId",
    "messageIds",
    "userIds",
    "callId",
    "token",
    "device",
    "protocol",
    "userId",
];

/// Every inbound event name of every dialect (and a few that are no event).
const EVENTS: &[&str] = &[
    "ping",
    "pong",
    "auth:refresh",
    "room:join",
    "room:leave",
    "channel:join",
    "channel:leave",
    "message:send",
    "message:new",
    "message:edit",
    "message:delete",
    "message:typing",
    "sync:messages",
    "sync:channels",
    "presence:update",
    "presence:subscribe",
    "presence:unsubscribe",
    "presence:get",
    "presence:settings",
    "typing:start",
    "typing:stop",
    "typing",
    "message:read-ack",
    "read:update",
    "receipt:update",
    "message:batch-read-ack",
    "channel:read",
    "delivery:sync",
    "reaction:add",
    "reaction:remove",
    "user:status",
    "notification:read",
    "call:initiate",
    "call:accept",
    "call:decline",
    "call:offer",
    "call:ice-candidate",
    "call:end",
    "call:cancelled",
    "call:mute:changed",
    "call:ring",
    "call:x",
    "stream:start",
    "nope",
    "",
];

/// One structural mutation of a payload (applied a few times in a row).
fn mutate(rng: &mut Rng, v: &mut Value) {
    match v {
        Value::Object(map) if !map.is_empty() && rng.below(3) > 0 => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = keys[rng.below(keys.len())].clone();
            match rng.below(4) {
                0 => {
                    map.remove(&key);
                }
                1 => mutate(rng, map.get_mut(&key).expect("present")),
                _ => {
                    map.insert(key, nasty(rng));
                }
            }
        }
        Value::Object(map) => {
            map.insert(FIELDS[rng.below(FIELDS.len())].to_string(), nasty(rng));
        }
        Value::Array(items) if !items.is_empty() && rng.below(2) == 0 => {
            let i = rng.below(items.len());
            mutate(rng, &mut items[i]);
        }
        _ => *v = if rng.below(4) == 0 { json!({}) } else { nasty(rng) },
    }
}

/// A mutation of the payload's JSON text (flipped, dropped or doubled bytes), when it still parses.
fn mutate_text(rng: &mut Rng, v: &Value) -> Option<Value> {
    let mut bytes = serde_json::to_vec(v).ok()?;
    for _ in 0..=rng.below(4) {
        if bytes.is_empty() {
            break;
        }
        let i = rng.below(bytes.len());
        match rng.below(3) {
            0 => bytes[i] = rng.next() as u8,
            1 => {
                bytes.remove(i);
            }
            _ => {
                let b = bytes[i];
                bytes.insert(i, b);
            }
        }
    }
    serde_json::from_slice(&bytes).ok()
}

/// Every decoder over one payload: refusals carry a message, nothing panics.
fn decode_all(v: &Value, pick: usize) {
    if let Err(e) = outgoing(v, 16_000) {
        assert!(!e.message.is_empty(), "message:send refusal without a reason for {v}");
    }
    for event in ["typing:start", "typing:stop", "typing"] {
        if let Err(e) = typing_request(event, v) {
            assert!(!e.message.is_empty(), "{event} refusal without a reason for {v}");
        }
    }
    if let Err(e) = presence_update(v) {
        assert!(!e.message.is_empty(), "presence:update refusal without a reason for {v}");
    }
    if let Err(why) = detect(v) {
        assert!(!why.is_empty(), "handshake auth refusal without a reason for {v}");
    }
    let _ = nul_field(v);
    for d in Dialect::ALL {
        // A few event tables per payload (all of them over the rounds), to keep the test quick.
        for event in (0..4).map(|j| EVENTS[(pick + j * 11 + d.index()) % EVENTS.len()]) {
            if let Err(e) = super::decode(d, event, v, 16_000) {
                assert!(!e.message.is_empty(), "{event} ({}) refusal without a reason for {v}", d.name());
            }
        }
        for event in ["message:send", "call:ice", "typing:start", "presence:update", "reaction:add", "x\u{0}y", ""] {
            let _ = refusal(d, event, Some(v));
        }
        let _ = refusal(d, "message:send", None);
    }
}

#[test]
fn decoders_survive_the_corpus_and_its_mutations() {
    let corpus = seeds();
    for (i, v) in corpus.iter().enumerate() {
        for pick in 0..EVENTS.len() {
            decode_all(v, pick + i);
        }
    }
    let mut rng = Rng(0x005E_ED0F_2026);
    let mut text_mutants = 0;
    for round in 0..rounds() {
        let mut v = corpus[round % corpus.len()].clone();
        for _ in 0..=rng.below(3) {
            mutate(&mut rng, &mut v);
        }
        decode_all(&v, round);
        let pick = rng.below(corpus.len());
        if let Some(t) = mutate_text(&mut rng, &corpus[pick]) {
            decode_all(&t, round + 1);
            text_mutants += 1;
        }
    }
    assert!(text_mutants > 0, "some byte-level mutants still parse as JSON");
}

#[tokio::test]
async fn token_parsing_survives_mutated_tokens() {
    use std::collections::BTreeMap;

    use crate::auth::{Verifier, mint_hs256};
    use crate::config::Config;

    let secret = "fuzz-secret-0123456789abcdef0123456789";
    let map: BTreeMap<String, String> =
        [("REALTIME_JWT_SECRET", secret)].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let verifier = Verifier::new(&Config::from_map(&map).expect("config")).expect("verifier");
    let now = chrono::Utc::now().timestamp();
    let good = mint_hs256(secret, "user-1", Some("Ann"), 3600).expect("mint");
    assert!(verifier.check(&good, now).await.is_ok(), "the seed token verifies");
    let seeds = [good.clone(), "a.b.c".into(), "..".into(), String::new(), "user:dev".into(), "x".repeat(20_000)];
    let mut rng = Rng(0x704E_2026);
    let mut accepted = 0;
    for round in 0..rounds() {
        let mut bytes = seeds[round % seeds.len()].clone().into_bytes();
        for _ in 0..=rng.below(3) {
            if bytes.is_empty() {
                bytes.push(b'.');
            }
            let i = rng.below(bytes.len());
            match rng.below(4) {
                0 => bytes[i] = b"ABCxyz019-_=.\0"[rng.below(14)],
                1 => {
                    bytes.remove(i);
                }
                2 => bytes.insert(i, b'.'),
                _ => bytes.truncate(i),
            }
        }
        let token = String::from_utf8_lossy(&bytes);
        match verifier.check(&token, now).await {
            Ok(identity) => {
                // Only a token whose signed part is intact can pass (base64 padding-free tails may differ).
                assert_eq!(identity.user_id, "user-1", "a mutant verified as another user: {token}");
                accepted += 1;
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    assert!(accepted < rounds() / 10, "mutated tokens are refused ({accepted} accepted)");
}
