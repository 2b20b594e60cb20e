//! Tokens for the simulated users: HS256 JWTs minted from a secret (claims `sub` AND `userId`,
//! `iat`, `exp`), or a template, or none.

use anyhow::{Context, bail};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde::Serialize;

use super::CommonArgs;

/// Where a client's token comes from.
pub enum TokenSource {
    /// Mint an HS256 JWT per user.
    Mint { key: EncodingKey, ttl_secs: u64 },
    /// `{user}` → user id, `{i}` → client index.
    Template(String),
    /// No token at all (`auth` is omitted).
    None,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    #[serde(rename = "userId")]
    user_id: &'a str,
    iat: u64,
    exp: u64,
}

impl TokenSource {
    pub fn from_args(c: &CommonArgs) -> anyhow::Result<Self> {
        if c.no_auth {
            return Ok(TokenSource::None);
        }
        if let Some(t) = &c.token_template {
            return Ok(TokenSource::Template(t.clone()));
        }
        match c.secret.as_deref() {
            Some(s) if !s.is_empty() => {
                Ok(TokenSource::Mint { key: EncodingKey::from_secret(s.as_bytes()), ttl_secs: c.token_ttl.max(1) })
            }
            _ => bail!(
                "bench: no way to authenticate: give --secret (or REALTIME_JWT_SECRET) to mint JWTs, \
                 --token-template (e.g. 'user:{{user}}' for dev tokens), or --no-auth"
            ),
        }
    }

    /// The token for `user` (client index `i`), or None when connecting without auth.
    pub fn token(&self, user: &str, i: u64) -> anyhow::Result<Option<String>> {
        match self {
            TokenSource::None => Ok(None),
            TokenSource::Template(t) => Ok(Some(t.replace("{user}", user).replace("{i}", &i.to_string()))),
            TokenSource::Mint { key, ttl_secs } => {
                let now = jsonwebtoken::get_current_timestamp();
                let claims = Claims { sub: user, user_id: user, iat: now, exp: now + ttl_secs };
                encode(&Header::default(), &claims, key).map(Some).context("minting a JWT")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation, decode};

    #[test]
    fn minted_tokens_carry_sub_and_user_id() {
        let src = TokenSource::Mint { key: EncodingKey::from_secret(b"s3cret"), ttl_secs: 60 };
        let t = src.token("bench-u1", 1).unwrap().unwrap();
        let d = decode::<serde_json::Value>(&t, &DecodingKey::from_secret(b"s3cret"), &Validation::default()).unwrap();
        assert_eq!(d.claims["sub"], "bench-u1");
        assert_eq!(d.claims["userId"], "bench-u1");
        assert!(d.claims["exp"].as_u64().unwrap() > d.claims["iat"].as_u64().unwrap());
    }

    #[test]
    fn templates_substitute() {
        let src = TokenSource::Template("user:{user}#{i}".into());
        assert_eq!(src.token("a", 7).unwrap().unwrap(), "user:a#7");
        assert_eq!(TokenSource::None.token("a", 1).unwrap(), None);
    }
}
