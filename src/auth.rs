//! Handshake authentication (docs/protocol.md §1): where the token comes from, how it is verified, and who it names.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::config::Config;

/// Who a socket is.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub user_id: String,
    pub session_id: Option<String>,
    pub name: Option<String>,
    pub avatar: Option<String>,
    /// Token expiry, epoch seconds.
    pub exp: Option<i64>,
}

/// Why a handshake is refused. The Display text is what the client's `connect_error` shows, so it starts with
/// the contract's prefixes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    #[error("Authentication required: send a token in auth.token, ?token= or Authorization: Bearer")]
    Missing,
    #[error("Invalid token: {0}")]
    Invalid(String),
    #[error("Connection refused: {0}")]
    Refused(String),
    #[error("Invalid protocol: {0}")]
    Protocol(String),
}

const MAX_TOKEN_LEN: usize = 16 * 1024;
const MAX_ID_LEN: usize = 256;

/// Verifies tokens with the configured keys. Built once; cheap to share.
pub struct Verifier {
    hmac: Option<DecodingKey>,
    public: Option<(DecodingKey, Vec<Algorithm>)>,
    allow_dev_tokens: bool,
    grace_secs: i64,
}

impl Verifier {
    pub fn new(cfg: &Config) -> anyhow::Result<Verifier> {
        let hmac = cfg.jwt_secret.as_ref().map(|s| DecodingKey::from_secret(s.as_bytes()));
        let public = match &cfg.jwt_public_key {
            None => None,
            Some(pem) => {
                if let Ok(k) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
                    Some((k, vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512]))
                } else if let Ok(k) = DecodingKey::from_ec_pem(pem.as_bytes()) {
                    Some((k, vec![Algorithm::ES256, Algorithm::ES384]))
                } else {
                    anyhow::bail!("REALTIME_JWT_PUBLIC_KEY is not an RSA or EC public key in PEM form");
                }
            }
        };
        Ok(Verifier {
            hmac,
            public,
            allow_dev_tokens: cfg.allow_dev_tokens,
            grace_secs: cfg.token_grace.as_secs() as i64,
        })
    }

    /// Verifies a token at `now` (epoch seconds). A token expired by less than the grace is accepted: the nchat
    /// client reconnects with the token it was created with.
    pub fn verify(&self, token: &str, now: i64) -> Result<Identity, AuthError> {
        let token = token.trim();
        let token = token.strip_prefix("Bearer ").unwrap_or(token).trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Invalid(format!("token is longer than {MAX_TOKEN_LEN} bytes")));
        }
        if let Some(user) = token.strip_prefix("user:") {
            if !self.allow_dev_tokens {
                return Err(AuthError::Invalid("dev tokens are disabled (set REALTIME_ALLOW_DEV_TOKENS=true)".into()));
            }
            let user = valid_id(user).map_err(AuthError::Invalid)?;
            return Ok(Identity { user_id: user, session_id: None, name: None, avatar: None, exp: None });
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(format!("not a JWT ({e})")))?;
        let key = match header.alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => self.hmac.as_ref().ok_or_else(|| {
                AuthError::Invalid("HMAC tokens are not accepted: REALTIME_JWT_SECRET is not set".into())
            })?,
            alg => match &self.public {
                Some((k, algs)) if algs.contains(&alg) => k,
                _ => {
                    return Err(AuthError::Invalid(format!(
                        "{alg:?} tokens are not accepted (configure REALTIME_JWT_PUBLIC_KEY with a matching key)"
                    )));
                }
            },
        };
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false; // checked below, with the grace
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.leeway = 5;
        validation.required_spec_claims.clear();
        let data =
            jsonwebtoken::decode::<Value>(token, key, &validation).map_err(|e| AuthError::Invalid(format!("{e}")))?;
        let claims = data.claims;
        let exp = match claims.get("exp") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f.floor() as i64))
                    .ok_or_else(|| AuthError::Invalid("exp must be a number of seconds".into()))?,
            ),
        };
        if let Some(exp) = exp
            && now > exp.saturating_add(self.grace_secs)
        {
            return Err(AuthError::Invalid("token expired".into()));
        }
        identity_from_claims(&claims, exp)
    }

    pub fn grace_secs(&self) -> i64 {
        self.grace_secs
    }
}

fn valid_id(id: &str) -> Result<String, String> {
    let id = id.trim();
    if id.is_empty() {
        return Err("user id is empty".into());
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!("user id is longer than {MAX_ID_LEN} bytes"));
    }
    if id.chars().any(|c| c.is_control()) {
        return Err("user id contains control characters".into());
    }
    Ok(id.to_string())
}

fn claim_str(claims: &Value, key: &str) -> Option<String> {
    match claims.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().chars().take(512).collect()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// User id from `userId`, else `sub`, else Hasura's `x-hasura-user-id`.
fn identity_from_claims(claims: &Value, exp: Option<i64>) -> Result<Identity, AuthError> {
    let user = claim_str(claims, "userId")
        .or_else(|| claim_str(claims, "sub"))
        .or_else(|| claims.get("https://hasura.io/jwt/claims").and_then(|h| claim_str(h, "x-hasura-user-id")))
        .ok_or_else(|| AuthError::Invalid("no user id claim (userId, sub or x-hasura-user-id)".into()))?;
    Ok(Identity {
        user_id: valid_id(&user).map_err(AuthError::Invalid)?,
        session_id: claim_str(claims, "sessionId"),
        name: claim_str(claims, "name").or_else(|| claim_str(claims, "displayName")),
        avatar: claim_str(claims, "picture").or_else(|| claim_str(claims, "avatarUrl")),
        exp,
    })
}

/// Mints an HS256 development token (the `token` subcommand, tests and the bench).
pub fn mint_hs256(secret: &str, user_id: &str, name: Option<&str>, ttl_secs: i64) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    let mut claims = serde_json::json!({ "sub": user_id, "userId": user_id, "iat": now, "exp": now + ttl_secs });
    if let Some(n) = name {
        claims["name"] = n.into();
    }
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn verifier(pairs: &[(&str, &str)]) -> Verifier {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Verifier::new(&Config::from_map(&map).unwrap()).unwrap()
    }
    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }
    fn sign(secret: &str, claims: Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn user_id_claims_in_order() {
        let v = verifier(&[("REALTIME_JWT_SECRET", "s")]);
        let t = sign("s", serde_json::json!({"sub": "s1", "userId": "u1", "name": "Ann", "sessionId": "x"}));
        let id = v.verify(&t, now()).unwrap();
        assert_eq!((id.user_id.as_str(), id.name.as_deref(), id.session_id.as_deref()), ("u1", Some("Ann"), Some("x")));
        let t = sign("s", serde_json::json!({"sub": "s1"}));
        assert_eq!(v.verify(&t, now()).unwrap().user_id, "s1");
        let t = sign("s", serde_json::json!({"https://hasura.io/jwt/claims": {"x-hasura-user-id": "h1"}}));
        assert_eq!(v.verify(&format!("Bearer {t}"), now()).unwrap().user_id, "h1");
    }

    #[test]
    fn bad_signatures_and_expired_tokens_are_invalid() {
        let v = verifier(&[("REALTIME_JWT_SECRET", "s"), ("REALTIME_TOKEN_GRACE", "60000")]);
        let t = sign("other", serde_json::json!({"sub": "u"}));
        assert!(matches!(v.verify(&t, now()), Err(AuthError::Invalid(_))));
        let t = sign("s", serde_json::json!({"sub": "u", "exp": now() - 30}));
        assert!(v.verify(&t, now()).is_ok(), "inside the grace");
        let t = sign("s", serde_json::json!({"sub": "u", "exp": now() - 120}));
        assert_eq!(v.verify(&t, now()), Err(AuthError::Invalid("token expired".into())));
        assert!(v.verify("", now()).unwrap_err().to_string().starts_with("Authentication required"));
        assert!(v.verify("garbage", now()).unwrap_err().to_string().starts_with("Invalid token"));
    }

    #[test]
    fn exp_of_any_numeric_form_is_enforced() {
        let v = verifier(&[("REALTIME_JWT_SECRET", "s"), ("REALTIME_TOKEN_GRACE", "0")]);
        let past = now() as f64 - 120.5;
        let t = sign("s", serde_json::json!({"sub": "u", "exp": past}));
        assert_eq!(v.verify(&t, now()), Err(AuthError::Invalid("token expired".into())), "a fractional exp");
        let t = sign("s", serde_json::json!({"sub": "u", "exp": "tomorrow"}));
        assert!(matches!(v.verify(&t, now()), Err(AuthError::Invalid(_))), "a string exp is refused, not ignored");
        let t = sign("s", serde_json::json!({"sub": "u", "exp": i64::MAX}));
        assert!(v.verify(&t, now()).is_ok(), "a far exp neither overflows nor expires");
    }

    #[test]
    fn unsigned_tokens_are_never_decoded() {
        // The original decoded unsigned tokens when no secret was set.
        let v = verifier(&[("REALTIME_ALLOW_DEV_TOKENS", "true")]);
        let t = sign("anything", serde_json::json!({"sub": "u"}));
        assert!(v.verify(&t, now()).unwrap_err().to_string().contains("REALTIME_JWT_SECRET"));
    }

    #[test]
    fn dev_tokens_only_when_allowed() {
        let off = verifier(&[("REALTIME_JWT_SECRET", "s")]);
        assert_eq!(
            off.verify("user:alice", now()).unwrap_err().to_string(),
            "Invalid token: dev tokens are disabled (set REALTIME_ALLOW_DEV_TOKENS=true)"
        );
        let on = verifier(&[("REALTIME_ALLOW_DEV_TOKENS", "true")]);
        assert_eq!(on.verify("user:alice", now()).unwrap().user_id, "alice");
    }

    #[test]
    fn minted_tokens_verify() {
        let v = verifier(&[("REALTIME_JWT_SECRET", "s")]);
        let t = mint_hs256("s", "u9", Some("Nine"), 3600).unwrap();
        let id = v.verify(&t, now()).unwrap();
        assert_eq!((id.user_id.as_str(), id.name.as_deref()), ("u9", Some("Nine")));
    }
}
