//! Engine.IO v4 / Socket.IO v5 text packets, as carried over a WebSocket (one packet per frame).
//!
//! Engine.IO: `0` open, `1` close, `2` ping, `3` pong, `4` message, `5` upgrade, `6` noop.
//! Socket.IO (inside an Engine.IO message): `0` CONNECT, `1` DISCONNECT, `2` EVENT, `3` ACK,
//! `4` CONNECT_ERROR, `5` BINARY_EVENT, `6` BINARY_ACK; then an optional `/nsp,`, an optional ack
//! id, then the JSON payload. Parsing is allocation-free on the hot path: the event name is sliced
//! out of the frame and the payload is left unparsed.

use serde::Serialize;

/// One inbound text frame, parsed just enough to route it.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// Engine.IO open packet, with its JSON handshake data.
    Open(&'a str),
    /// Engine.IO close.
    Close,
    /// Engine.IO ping from the server (answer with a pong).
    Ping,
    /// Engine.IO pong / noop / upgrade: nothing to do.
    Ignore,
    /// Socket.IO CONNECT accepted (JSON `{sid}`).
    Connect(&'a str),
    /// Socket.IO CONNECT_ERROR (JSON `{message, data?}`).
    ConnectError(&'a str),
    /// Socket.IO DISCONNECT from the server.
    Disconnect,
    /// Socket.IO EVENT: `name` and the whole JSON array (`["name", ...args]`).
    Event { ack: Option<u64>, name: &'a str, raw: &'a str },
    /// Socket.IO ACK: id and the JSON array of ack arguments.
    Ack { id: u64, raw: &'a str },
    /// Binary events/acks (attachments follow in binary frames): not used by the bench.
    Binary,
    /// Anything else.
    Unknown,
}

/// Parses one Engine.IO text frame.
pub fn parse(frame: &str) -> Inbound<'_> {
    let b = frame.as_bytes();
    if b.is_empty() {
        return Inbound::Unknown;
    }
    match b[0] {
        b'0' => Inbound::Open(&frame[1..]),
        b'1' => Inbound::Close,
        b'2' => Inbound::Ping,
        b'3' | b'5' | b'6' => Inbound::Ignore,
        b'4' => parse_socketio(&frame[1..]),
        _ => Inbound::Unknown,
    }
}

fn parse_socketio(p: &str) -> Inbound<'_> {
    let b = p.as_bytes();
    if b.is_empty() {
        return Inbound::Unknown;
    }
    let kind = b[0];
    let mut rest = &p[1..];
    if kind == b'5' || kind == b'6' {
        return Inbound::Binary;
    }
    // Namespace: only when it starts with '/', up to the first ','.
    if rest.starts_with('/') {
        match rest.find(',') {
            Some(i) => rest = &rest[i + 1..],
            None => rest = "",
        }
    }
    // Ack id: leading digits.
    let digits = rest.bytes().take_while(|c| c.is_ascii_digit()).count();
    let id = if digits > 0 { rest[..digits].parse::<u64>().ok() } else { None };
    let json = &rest[digits..];
    match kind {
        b'0' => Inbound::Connect(json),
        b'1' => Inbound::Disconnect,
        b'2' => Inbound::Event { ack: id, name: event_name(json).unwrap_or(""), raw: json },
        b'3' => match id {
            Some(id) => Inbound::Ack { id, raw: json },
            None => Inbound::Unknown,
        },
        b'4' => Inbound::ConnectError(json),
        _ => Inbound::Unknown,
    }
}

/// The event name of `["name", ...]`, when it is a plain string without escapes.
fn event_name(json: &str) -> Option<&str> {
    let s = json.strip_prefix('[')?.trim_start();
    let s = s.strip_prefix('"')?;
    let end = s.find('"')?;
    let name = &s[..end];
    if name.contains('\\') {
        return None;
    }
    Some(name)
}

/// `40` + auth JSON: Socket.IO CONNECT to namespace `/`.
pub fn connect_packet(auth: &serde_json::Value) -> String {
    if auth.is_null() { "40".to_string() } else { format!("40{auth}") }
}

/// `42[<name>,<data>]` or `42<id>[<name>,<data>]`.
pub fn event_packet<T: Serialize + ?Sized>(name: &str, ack: Option<u64>, data: &T) -> String {
    let name = serde_json::to_string(name).unwrap_or_else(|_| "\"\"".into());
    let data = serde_json::to_string(data).unwrap_or_else(|_| "null".into());
    match ack {
        Some(id) => format!("42{id}[{name},{data}]"),
        None => format!("42[{name},{data}]"),
    }
}

/// `41`: Socket.IO DISCONNECT from namespace `/`.
pub const DISCONNECT: &str = "41";
/// `3`: Engine.IO pong.
pub const PONG: &str = "3";

/// Extracts `message` from a CONNECT_ERROR payload (`{"message": "..."}`), or the raw text.
pub fn connect_error_message(json: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(v) => v.get("message").and_then(|m| m.as_str()).map(str::to_string).unwrap_or_else(|| v.to_string()),
        Err(_) => json.chars().take(200).collect(),
    }
}

/// Outcome of a request acknowledged with the nself `{success, data | error}` envelope.
#[derive(Debug, PartialEq, Eq)]
pub enum AckOutcome {
    Ok,
    Err(String),
}

/// Reads the first ack argument: `{success:true}` is Ok, `{success:false,error:{code}}` gives the
/// code. An ack that is not an envelope (any other value) counts as Ok: generic servers.
pub fn ack_outcome(raw: &str) -> AckOutcome {
    // Fast path for the common success shape.
    if raw.starts_with("[{\"success\":true") {
        return AckOutcome::Ok;
    }
    let v: serde_json::Value = match serde_json::from_str(raw) {
        Ok(v) => v,
        Err(_) => return AckOutcome::Err("BAD_ACK_JSON".into()),
    };
    let first = v.get(0).cloned().unwrap_or(serde_json::Value::Null);
    match first.get("success").and_then(|s| s.as_bool()) {
        Some(true) | None => AckOutcome::Ok,
        Some(false) => {
            let e = first.get("error");
            let code = e
                .and_then(|e| e.get("code").and_then(|c| c.as_str()).map(str::to_string))
                .or_else(|| e.and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| "ERROR".into());
            AckOutcome::Err(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_engineio_and_socketio_packets() {
        assert_eq!(parse("2"), Inbound::Ping);
        assert_eq!(parse("3"), Inbound::Ignore);
        assert_eq!(parse("1"), Inbound::Close);
        assert_eq!(parse(r#"0{"sid":"x","pingInterval":25000}"#), Inbound::Open(r#"{"sid":"x","pingInterval":25000}"#));
        assert_eq!(parse(r#"40{"sid":"abc"}"#), Inbound::Connect(r#"{"sid":"abc"}"#));
        assert_eq!(parse(r#"40/admin,{"sid":"abc"}"#), Inbound::Connect(r#"{"sid":"abc"}"#));
        assert_eq!(parse(r#"44{"message":"Invalid token"}"#), Inbound::ConnectError(r#"{"message":"Invalid token"}"#));
        assert_eq!(parse("41"), Inbound::Disconnect);
        assert_eq!(
            parse(r#"42["message:new",{"id":"1"}]"#),
            Inbound::Event { ack: None, name: "message:new", raw: r#"["message:new",{"id":"1"}]"# }
        );
        assert_eq!(parse(r#"4217["ping",{}]"#), Inbound::Event { ack: Some(17), name: "ping", raw: r#"["ping",{}]"# });
        assert_eq!(parse(r#"433[{"success":true}]"#), Inbound::Ack { id: 3, raw: r#"[{"success":true}]"# });
        assert_eq!(parse(r#"451-["x",{"_placeholder":true,"num":0}]"#), Inbound::Binary);
        assert_eq!(parse(""), Inbound::Unknown);
    }

    #[test]
    fn encodes_packets() {
        assert_eq!(
            event_packet("room:join", Some(4), &json!({"roomName": "general"})),
            r#"424["room:join",{"roomName":"general"}]"#
        );
        assert_eq!(
            event_packet("presence:update", None, &json!({"status": "away"})),
            r#"42["presence:update",{"status":"away"}]"#
        );
        assert_eq!(connect_packet(&json!({"token": "t"})), r#"40{"token":"t"}"#);
        assert_eq!(connect_packet(&serde_json::Value::Null), "40");
    }

    #[test]
    fn reads_ack_envelopes() {
        assert_eq!(ack_outcome(r#"[{"success":true,"data":{}}]"#), AckOutcome::Ok);
        assert_eq!(ack_outcome(r#"[{"data":{},"success":true}]"#), AckOutcome::Ok);
        assert_eq!(
            ack_outcome(r#"[{"success":false,"error":{"code":"RATE_LIMITED","message":"x"}}]"#),
            AckOutcome::Err("RATE_LIMITED".into())
        );
        assert_eq!(ack_outcome(r#"["ok"]"#), AckOutcome::Ok);
        assert_eq!(connect_error_message(r#"{"message":"Invalid token: expired"}"#), "Invalid token: expired");
    }
}
