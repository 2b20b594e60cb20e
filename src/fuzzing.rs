//! Entry points of the fuzz targets (`fuzz/`, cargo-fuzz): each reads raw bytes the way the server reads
//! them off the wire, runs the same decoder the server runs, and checks what must hold of its answer. A
//! panic here is a finding. The committed corpus (`fuzz/corpus/<target>/`) is replayed through the same
//! functions by `cargo test --lib fuzzing`, so no finding comes back unnoticed.
//!
//! Not an API: hidden from the docs, and free to change with the decoders.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::Value;

use crate::app::messages::Outgoing;
use crate::auth::{Identity, Verifier};
use crate::config::Config;
use crate::error::AppError;
use crate::wire::{self, Command, Dialect, contract, handshake, plugin, socket};

/// The content bound the event targets decode with (the default `REALTIME_MAX_MESSAGE_LENGTH`).
pub const MAX_MESSAGE_LENGTH: usize = 16_000;

/// The secret the token targets sign and verify with.
pub const SECRET: &str = "fuzz-secret-0123456789abcdef0123456789";

/// The fixed "now" (epoch seconds) tokens are checked at: 2026-01-01.
pub const NOW: i64 = 1_767_225_600;

/// A target: raw bytes in; a panic is a finding.
pub type Target = fn(&[u8]);

/// The targets, by name: what `fuzz/fuzz_targets/<name>.rs` calls and `fuzz/corpus/<name>/` feeds.
pub const TARGETS: &[(&str, Target)] = &[
    ("event_contract", event_contract),
    ("event_socket", event_socket),
    ("event_plugin", event_plugin),
    ("handshake", handshake),
    ("token", token),
    ("token_claims", token_claims),
];

/// A Socket.IO EVENT's data as a contract socket sends it: the JSON array `["name", payload?, …]`.
pub fn event_contract(data: &[u8]) {
    event(Dialect::Contract, data)
}

/// The same for a `socket` (and `compat`: they share the event table) socket.
pub fn event_socket(data: &[u8]) {
    event(Dialect::Socket, data);
    event(Dialect::Compat, data)
}

/// The same for a plugin socket.
pub fn event_plugin(data: &[u8]) {
    event(Dialect::Plugin, data)
}

/// One inbound event through the refusal reading and the decoder of a dialect.
pub fn event(dialect: Dialect, data: &[u8]) {
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(data) else { return };
    let Some(Value::String(name)) = items.first() else { return };
    let payload = items.get(1).cloned().unwrap_or(Value::Null);
    // What a refusal of it tells: read from the raw payload, before any validation.
    let refusal = wire::refusal(dialect, name, Some(&payload));
    if let Some(cid) = &refusal.failed {
        assert!(cid.chars().count() <= wire::limits::ID, "message:failed echoes an unbounded clientMessageId");
    }
    match wire::decode(dialect, name, &payload, MAX_MESSAGE_LENGTH) {
        Ok(command) => {
            assert!(wire::nul_field(&payload).is_none(), "{name}: a payload holding a NUL was accepted");
            check_command(name, &command);
        }
        Err(e) => check_refusal(name, &e),
    }
}

fn check_refusal(name: &str, e: &AppError) {
    assert!(!e.message.trim().is_empty(), "{name}: a refusal without a reason ({:?})", e.code);
}

/// What every accepted command must satisfy, whatever the payload was.
fn check_command(name: &str, command: &Command) {
    let outgoing = match command {
        Command::Contract(contract::Command::Send(out))
        | Command::Socket(socket::Command::Send(out))
        | Command::Plugin(plugin::Command::Send(out)) => Some(out),
        Command::Socket(socket::Command::Contract(contract::Command::Send(out)))
        | Command::Plugin(plugin::Command::Contract(contract::Command::Send(out))) => Some(out),
        _ => None,
    };
    if let Some(out) = outgoing {
        check_outgoing(name, out);
    }
}

fn check_outgoing(name: &str, out: &Outgoing) {
    assert!(out.content.len() <= MAX_MESSAGE_LENGTH, "{name}: content over the bound was accepted");
    assert!(!out.content.trim().is_empty() || out.attachments.is_some(), "{name}: an empty message was accepted");
    assert!(!out.room.name.is_empty() && out.room.name.len() <= 512, "{name}: room name {:?}", out.room.name);
    assert!(out.kind.len() <= wire::limits::SHORT, "{name}: type over the bound");
    for (field, json) in [("metadata", &out.metadata), ("mentions", &out.mentions), ("attachments", &out.attachments)] {
        if let Some(text) = json {
            assert!(
                serde_json::from_str::<Value>(text).is_ok(),
                "{name}: {field} is stored as JSON that does not parse"
            );
        }
    }
    for id in [&out.thread_id, &out.reply_to, &out.client_message_id].into_iter().flatten() {
        assert!(!id.is_empty() && id.len() <= wire::limits::ID, "{name}: an id out of bounds: {id:?}");
    }
}

/// A handshake: `{"auth": {…}, "query": "token=…&app=…", "authorization": "Bearer …", "appName": "…"}`, or
/// any other JSON value taken as the `auth` object alone.
pub fn handshake(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(data) else { return };
    let wrapped = v.get("auth").is_some();
    let auth = if wrapped { v["auth"].clone() } else { v.clone() };
    let get = |k: &str| if wrapped { v.get(k).and_then(Value::as_str) } else { None };
    let request =
        handshake::Request { query: get("query"), authorization: get("authorization"), app_name: get("appName") };
    match handshake::read(&auth, request) {
        Ok(h) => {
            assert!(
                !h.account.is_empty()
                    && h.account.len() <= 64
                    && h.account
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'),
                "account {:?} is not normalised",
                h.account
            );
            if let Some(user) = &h.detected.claimed_user {
                assert!(!user.is_empty() && user.len() <= wire::limits::ID, "claimed user {user:?}");
            }
            for s in h.device.iter().flat_map(|d| [&d.kind, &d.os, &d.browser]).flatten() {
                assert!(s.chars().count() <= 64, "device field over 64 characters");
            }
            assert!(h.token.as_deref().is_none_or(|t| !t.is_empty()), "an empty token is no token");
        }
        Err(e) => assert!(!e.to_string().trim().is_empty(), "a handshake refusal without a reason"),
    }
}

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let map: BTreeMap<String, String> = [("REALTIME_JWT_SECRET", SECRET), ("REALTIME_ALLOW_DEV_TOKENS", "true")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Verifier::new(&Config::from_map(&map).expect("fuzz config")).expect("fuzz verifier")
    })
}

/// What a verified identity must be: a user id of 1–256 bytes without control characters, profile claims
/// without control characters.
fn check_identity(i: &Identity) {
    assert!(!i.user_id.is_empty() && i.user_id.len() <= 256, "user id {:?}", i.user_id);
    assert!(!i.user_id.chars().any(char::is_control), "user id with a control character: {:?}", i.user_id);
    assert_eq!(i.user_id.trim(), i.user_id, "user id not trimmed");
    for s in [&i.name, &i.avatar, &i.session_id].into_iter().flatten() {
        assert!(!s.chars().any(char::is_control), "profile claim with a control character: {s:?}");
        assert!(s.chars().count() <= 512, "profile claim over 512 characters");
    }
}

/// A token as the handshake receives it (`auth.token`, `?token=`, `Authorization`), through the verifier
/// (HMAC secret, dev tokens allowed). What verifies is a dev token or carries a true signature of its
/// header and claims (the fuzzer cannot sign; it can only keep a seed's signed parts intact).
pub fn token(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match verifier().verify(&text, NOW) {
        Ok(i) => {
            check_identity(&i);
            let bare = text.trim();
            let bare = bare.strip_prefix("Bearer ").unwrap_or(bare).trim();
            if !bare.starts_with("user:") {
                let (message, signature) = bare.rsplit_once('.').expect("a verified JWT has three parts");
                let alg = jsonwebtoken::decode_header(bare).expect("a verified JWT has a header").alg;
                let key = jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes());
                let signed = jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key, alg);
                assert!(matches!(signed, Ok(true)), "a token without a true signature verified: {text:?}");
            }
        }
        Err(e) => assert!(!e.to_string().trim().is_empty(), "a token refusal without a reason"),
    }
}

/// A token's claims: the input (any JSON value) is signed with the secret, then verified at [`NOW`] — the
/// claim reading (exp, nbf, user id, profile) behind a valid signature.
pub fn token_claims(data: &[u8]) {
    let Ok(claims) = serde_json::from_slice::<Value>(data) else { return };
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let Ok(token) = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key) else { return };
    match verifier().verify(&token, NOW) {
        Ok(i) => {
            check_identity(&i);
            if let Some(exp) = i.exp {
                assert!(NOW <= exp.saturating_add(verifier().grace_secs()), "an expired token verified");
            }
        }
        Err(e) => assert!(!e.to_string().trim().is_empty(), "a claims refusal without a reason"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed corpus file through its target: the corpus is a regression suite without cargo-fuzz.
    #[test]
    fn the_fuzz_corpus_replays_cleanly() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let mut files = 0;
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
                let path = entry.expect("corpus entry").path();
                let data = std::fs::read(&path).expect("corpus file");
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name}: {} panics", path.display());
                files += 1;
            }
            assert!(files >= 10, "{name}: only {files} corpus files in {}", dir.display());
        }
    }
}
