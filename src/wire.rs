//! The wire dialect at the edge: reading inbound payloads field by field (type and size checked, with the
//! contract's error codes) and building the outbound payloads.

use serde_json::{Map, Value, json};

use crate::error::{AppError, AppResult};
use crate::store::MessageRow;

/// Bounds for inbound strings and arrays (CONTRACT §1: everything is bounded).
pub mod limits {
    pub const ID: usize = 256;
    pub const SHORT: usize = 64;
    pub const STATUS_TEXT: usize = 256;
    pub const EMOJI: usize = 64;
    pub const METADATA: usize = 16 * 1024;
    pub const ATTACHMENTS: usize = 64 * 1024;
    pub const ID_ARRAY: usize = 1000;
    pub const ATTACHMENT_COUNT: usize = 100;
    pub const EMOJI_BYTES: usize = 64;
}

/// An inbound payload that must be a JSON object.
pub struct Payload<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Payload<'a> {
    pub fn object(data: &'a Value) -> AppResult<Payload<'a>> {
        match data {
            Value::Object(map) => Ok(Payload { map }),
            Value::Null => Err(AppError::validation("payload is missing; send an object")),
            other => Err(AppError::validation(format!("payload must be an object, not {}", kind(other)))),
        }
    }

    pub fn has(&self, field: &str) -> bool {
        self.map.get(field).is_some_and(|v| !v.is_null())
    }

    pub fn raw(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    /// An optional string of at most `max` bytes. Empty strings count as absent.
    pub fn opt_str(&self, field: &str, max: usize) -> AppResult<Option<&'a str>> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() > max => Err(AppError::too_large(field, max)),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(AppError::validation(format!("{field} must be a string, not {}", kind(other)))),
        }
    }

    pub fn str(&self, field: &str, max: usize) -> AppResult<&'a str> {
        self.opt_str(field, max)?.ok_or_else(|| AppError::validation(format!("{field} is required")))
    }

    /// A string that may also be sent as a number (ids from clients that use numeric ids).
    pub fn opt_id(&self, field: &str) -> AppResult<Option<String>> {
        match self.map.get(field) {
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            _ => Ok(self.opt_str(field, limits::ID)?.map(str::to_string)),
        }
    }

    pub fn opt_bool(&self, field: &str) -> AppResult<Option<bool>> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(AppError::validation(format!("{field} must be a boolean, not {}", kind(other)))),
        }
    }

    /// An optional integer (epoch ms, limits, seqs).
    pub fn opt_i64(&self, field: &str) -> AppResult<Option<i64>> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
                .map(Some)
                .ok_or_else(|| AppError::validation(format!("{field} must be an integer"))),
            Some(Value::String(s)) => {
                s.trim().parse().map(Some).map_err(|_| AppError::validation(format!("{field} must be an integer")))
            }
            Some(other) => Err(AppError::validation(format!("{field} must be a number, not {}", kind(other)))),
        }
    }

    /// An optional array of id strings, at most [`limits::ID_ARRAY`] entries.
    pub fn opt_ids(&self, field: &str) -> AppResult<Option<Vec<String>>> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => {
                if items.len() > limits::ID_ARRAY {
                    return Err(AppError::too_large(field, limits::ID_ARRAY)
                        .with_details(json!({"field": field, "maxItems": limits::ID_ARRAY})));
                }
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s) if s.len() > limits::ID => return Err(AppError::too_large(field, limits::ID)),
                        Value::String(s) if !s.trim().is_empty() => out.push(s.trim().to_string()),
                        Value::Number(n) => out.push(n.to_string()),
                        _ => return Err(AppError::validation(format!("{field} must be an array of id strings"))),
                    }
                }
                Ok(Some(out))
            }
            Some(other) => Err(AppError::validation(format!("{field} must be an array, not {}", kind(other)))),
        }
    }

    pub fn ids(&self, field: &str) -> AppResult<Vec<String>> {
        self.opt_ids(field)?.ok_or_else(|| AppError::validation(format!("{field} is required")))
    }

    /// Optional free-form JSON (object or array), stored as text of at most `max` bytes.
    pub fn opt_json(&self, field: &str, max: usize, want_array: bool) -> AppResult<Option<String>> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v @ Value::Array(_)) if want_array => bounded_json(field, v, max),
            Some(v @ Value::Object(_)) if !want_array => bounded_json(field, v, max),
            Some(other) => Err(AppError::validation(format!(
                "{field} must be an {}, not {}",
                if want_array { "array" } else { "object" },
                kind(other)
            ))),
        }
    }
}

fn bounded_json(field: &str, v: &Value, max: usize) -> AppResult<Option<String>> {
    let text = v.to_string();
    if text.len() > max { Err(AppError::too_large(field, max)) } else { Ok(Some(text)) }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (URL paths and credentials).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// ISO-8601 UTC with milliseconds, the contract's timestamp form.
pub fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parse_json_text(text: &Option<String>) -> Option<Value> {
    text.as_deref().and_then(|t| serde_json::from_str(t).ok())
}

/// The bare id nchat knows a room by: `channel:<id>` → `<id>`, any other room → its name.
pub fn channel_id_of(room: &str) -> &str {
    room.strip_prefix("channel:").unwrap_or(room)
}

/// Sender details that are not stored with the message.
pub struct Author<'a> {
    pub name: Option<&'a str>,
    pub avatar: Option<&'a str>,
}

/// `message:new`: one superset payload that both nchat readers accept.
pub fn message_new(m: &MessageRow, author: &Author) -> Value {
    let mut v = json!({
        "id": m.id,
        "messageId": m.id,
        "roomName": m.room,
        "channelId": channel_id_of(&m.room),
        "userId": m.user_id,
        "content": m.content,
        "type": m.kind,
        "seq": m.seq,
        "createdAt": iso(m.created_at),
        "timestamp": iso(m.created_at),
    });
    let o = v.as_object_mut().expect("object");
    let mut put = |k: &str, val: Option<Value>| {
        if let Some(val) = val {
            o.insert(k.to_string(), val);
        }
    };
    put("userName", author.name.map(Value::from));
    put("userAvatar", author.avatar.map(Value::from));
    put("threadId", m.thread_id.clone().map(Value::from));
    put("replyTo", m.reply_to.clone().map(Value::from));
    put("metadata", parse_json_text(&m.metadata));
    put("mentions", parse_json_text(&m.mentions));
    put("attachments", parse_json_text(&m.attachments));
    put("clientMessageId", m.client_message_id.clone().map(Value::from));
    v
}

/// One message of a `sync:messages` page.
pub fn synced_message(m: &MessageRow) -> Value {
    let mut v = json!({
        "id": m.id,
        "channelId": channel_id_of(&m.room),
        "content": if m.deleted_at.is_some() { "" } else { m.content.as_str() },
        "userId": m.user_id,
        "createdAt": iso(m.created_at),
        "type": m.kind,
        "seq": m.seq,
        "isEdited": m.edited_at.is_some(),
        "isDeleted": m.deleted_at.is_some(),
    });
    let o = v.as_object_mut().expect("object");
    if m.updated_at != m.created_at {
        o.insert("updatedAt".into(), iso(m.updated_at).into());
    }
    if let Some(t) = &m.thread_id {
        o.insert("threadId".into(), t.clone().into());
    }
    if let Some(c) = &m.client_message_id {
        o.insert("clientMessageId".into(), c.clone().into());
    }
    if let Some(meta) = parse_json_text(&m.metadata) {
        o.insert("metadata".into(), meta);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn fields_are_type_and_size_checked() {
        let data = json!({"roomName": 5, "content": "x".repeat(20), "ids": ["a", 3], "thread": "t"});
        let p = Payload::object(&data).unwrap();
        assert_eq!(p.str("roomName", 10).unwrap_err().code, ErrorCode::ValidationError);
        assert_eq!(p.str("content", 10).unwrap_err().code, ErrorCode::PayloadTooLarge);
        assert_eq!(p.str("missing", 10).unwrap_err().code, ErrorCode::ValidationError);
        assert_eq!(p.ids("ids").unwrap(), vec!["a".to_string(), "3".to_string()]);
        assert_eq!(Payload::object(&json!("text")).err().unwrap().code, ErrorCode::ValidationError);
        assert_eq!(Payload::object(&Value::Null).err().unwrap().code, ErrorCode::ValidationError);
        let many = json!({"ids": vec!["x"; 1001]});
        assert_eq!(Payload::object(&many).unwrap().ids("ids").unwrap_err().code, ErrorCode::PayloadTooLarge);
    }

    #[test]
    fn iso_has_milliseconds() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn message_new_is_the_superset() {
        let m = MessageRow {
            id: "m1".into(),
            room: "channel:c1".into(),
            seq: 7,
            user_id: "u1".into(),
            kind: "text".into(),
            content: "hi".into(),
            thread_id: None,
            reply_to: Some("m0".into()),
            metadata: Some("{\"k\":1}".into()),
            mentions: None,
            attachments: None,
            client_message_id: Some("c-1".into()),
            created_at: 0,
            updated_at: 0,
            edited_at: None,
            deleted_at: None,
        };
        let v = message_new(&m, &Author { name: Some("Ann"), avatar: None });
        assert_eq!(v["id"], "m1");
        assert_eq!(v["messageId"], "m1");
        assert_eq!(v["channelId"], "c1");
        assert_eq!(v["roomName"], "channel:c1");
        assert_eq!(v["userName"], "Ann");
        assert_eq!(v["metadata"]["k"], 1);
        assert_eq!(v["clientMessageId"], "c-1");
        assert!(v.get("threadId").is_none());
        assert!(v.get("userAvatar").is_none());
    }
}

/// Serde helpers: stored epoch-ms fields go on the wire (and the admin API) as ISO-8601 strings.
pub mod ser {
    pub fn iso<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::iso(*ms))
    }
    pub fn opt_iso<S: serde::Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => s.serialize_str(&super::iso(*ms)),
            None => s.serialize_none(),
        }
    }
}
