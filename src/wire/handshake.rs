//! The handshake's reading (docs/protocol.md §1): the token, the account, the dialect and the device, from
//! the `auth` object, the query string and the headers. Pure: the token is verified and the limits applied
//! by the transport afterwards.

use serde_json::Value;

use super::{Detected, detect, nul_field};
use crate::app::session::Device;
use crate::auth::AuthError;
use crate::domain::names::normalize_account;

/// What a handshake says, before anything is verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// `auth.token`, else `?token=`, else `Authorization: Bearer` (None: no token was sent).
    pub token: Option<String>,
    /// `auth.sourceAccountId`, else `X-App-Name`, else `?app=`, normalised.
    pub account: String,
    pub detected: Detected,
    /// `auth.device {type, os, browser}`, each cut to 64 characters.
    pub device: Option<Device>,
}

/// The parts of the HTTP request a handshake reads besides `auth`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Request<'a> {
    /// The raw query string (without `?`).
    pub query: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub app_name: Option<&'a str>,
}

/// Reads a handshake. Refusals: a NUL character anywhere in `auth` (PostgreSQL text cannot hold it), an
/// unknown `auth.protocol` or a malformed `auth.userId`.
pub fn read(auth: &Value, req: Request<'_>) -> Result<Handshake, AuthError> {
    if let Some(field) = nul_field(auth) {
        return Err(AuthError::Protocol(format!(
            "auth.{field} contains a NUL character (\\u0000), which no text may hold; remove it"
        )));
    }
    let query = |key: &str| -> Option<String> {
        req.query.and_then(|q| {
            q.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == key).then(|| percent_decode(v))
            })
        })
    };
    let token = auth
        .get("token")
        .and_then(Value::as_str)
        .map(str::to_string)
        .filter(|t| !t.trim().is_empty())
        .or_else(|| query("token").filter(|t| !t.is_empty()))
        .or_else(|| req.authorization.and_then(|h| h.strip_prefix("Bearer ").map(str::to_string)));
    let account = normalize_account(
        auth.get("sourceAccountId")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| req.app_name.map(str::to_string))
            .or_else(|| query("app"))
            .as_deref(),
    );
    // The wire dialect (docs/protocol.md §13.1).
    let detected = detect(auth).map_err(AuthError::Protocol)?;
    let device = auth.get("device").map(|d| Device {
        kind: short(d.get("type")),
        os: short(d.get("os")),
        browser: short(d.get("browser")),
    });
    Ok(Handshake { token, account, detected, device })
}

fn short(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(|s| s.chars().take(64).collect())
}

/// `%XX` and `+` of a query value; invalid UTF-8 becomes U+FFFD.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // Two hex digits exactly (`from_str_radix` alone would take "+1" as 1).
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::wire::Dialect;

    #[test]
    fn the_token_comes_from_auth_then_query_then_header() {
        let req = Request { query: Some("app=shop&token=q%2Eq+x"), authorization: Some("Bearer h"), app_name: None };
        assert_eq!(read(&json!({"token": "a"}), req).unwrap().token.as_deref(), Some("a"));
        assert_eq!(read(&json!({"token": "  "}), req).unwrap().token.as_deref(), Some("q.q x"));
        let req = Request { query: Some("token="), ..req };
        assert_eq!(read(&json!({}), req).unwrap().token.as_deref(), Some("h"));
        assert_eq!(read(&json!({}), Request::default()).unwrap().token, None);
    }

    #[test]
    fn account_dialect_and_device_are_read() {
        let req = Request { query: Some("app=from-query"), app_name: Some("from-header"), ..Default::default() };
        let h = read(&json!({"device": {"type": "web", "os": "x".repeat(100)}}), req).unwrap();
        assert_eq!(h.account, normalize_account(Some("from-header")));
        assert_eq!(h.detected.dialect, Dialect::Contract);
        let device = h.device.unwrap();
        assert_eq!((device.kind.as_deref(), device.os.map(|o| o.len())), (Some("web"), Some(64)));
        let h = read(&json!({"sourceAccountId": "acc", "userId": "u1"}), Request::default()).unwrap();
        assert_eq!((h.account.as_str(), h.detected.claimed_user.as_deref()), ("acc", Some("u1")));
        assert!(matches!(read(&json!({"protocol": "klingon"}), req), Err(AuthError::Protocol(_))));
        let nul = read(&json!({"token": "a\u{0}b"}), req).unwrap_err();
        assert!(nul.to_string().contains("auth.token contains a NUL"), "{nul}");
    }

    #[test]
    fn percent_decoding_survives_bad_escapes() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
        assert_eq!(percent_decode("%e2%82"), "\u{fffd}");
        assert_eq!(percent_decode("%+1%-1"), "% 1%-1", "a sign is not a hex digit");
    }
}
