//! Handshake authentication (docs/protocol.md §1): where the token comes from, how it is verified, and who it names.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

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
/// Clock skew allowed between the auth service and this server for `nbf`.
const LEEWAY_SECS: i64 = 5;

const HMAC_ALGS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA_ALGS: [Algorithm; 6] =
    [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512];
const EC_ALGS: [Algorithm; 2] = [Algorithm::ES256, Algorithm::ES384];

/// Keys fetched from a JWKS are kept at most this long before the next token fetches them again (a key the
/// auth service withdrew stops verifying within it).
const JWKS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// One verification key of a JWKS.
struct JwksKey {
    kid: Option<String>,
    /// The algorithm the key is for, when the JWKS says.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

/// The keys of `REALTIME_JWKS_URL`: fetched at start, again when a token names a `kid` the cache does not
/// hold (at most once per `REALTIME_JWKS_REFRESH_INTERVAL`, so forged `kid`s cannot make the server hammer
/// the auth service), and when the cache is older than [`JWKS_MAX_AGE`]. A rotation needs no restart.
struct Jwks {
    url: String,
    interval: std::time::Duration,
    client: reqwest::Client,
    keys: parking_lot::RwLock<Vec<JwksKey>>,
    /// When the last fetch started, and when the keys were last replaced.
    fetched: parking_lot::Mutex<(Option<std::time::Instant>, Option<std::time::Instant>)>,
    /// One fetch at a time; tokens waiting for it see its keys.
    fetching: tokio::sync::Mutex<()>,
}

impl Jwks {
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        let keys = self.keys.read();
        let fits = |k: &&JwksKey| k.alg.is_none_or(|a| a == alg);
        match kid {
            Some(kid) => keys.iter().filter(fits).find(|k| k.kid.as_deref() == Some(kid)).map(|k| k.key.clone()),
            // A token without a kid: only a JWKS with a single usable key says which one.
            None => {
                let usable: Vec<&JwksKey> = keys.iter().filter(fits).collect();
                (usable.len() == 1).then(|| usable[0].key.clone())
            }
        }
    }

    fn stale(&self) -> bool {
        self.fetched.lock().1.is_none_or(|at| at.elapsed() > JWKS_MAX_AGE)
    }

    /// Fetches the keys unless a fetch started less than an interval ago (`force`: at start).
    async fn refresh(&self, force: bool) {
        let _one = self.fetching.lock().await;
        {
            let mut fetched = self.fetched.lock();
            if !force && fetched.0.is_some_and(|at| at.elapsed() < self.interval) {
                return;
            }
            fetched.0 = Some(std::time::Instant::now());
        }
        match self.fetch().await {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), url = %self.url, "JWKS keys loaded");
                *self.keys.write() = keys;
                self.fetched.lock().1 = Some(std::time::Instant::now());
            }
            // `{:#}`: the whole chain; the cause ("invalid peer certificate: UnknownIssuer") is at its end.
            Err(e) => {
                tracing::warn!(url = %self.url, error = format!("{e:#}"), "JWKS fetch failed; keeping the keys held")
            }
        }
    }

    async fn fetch(&self) -> anyhow::Result<Vec<JwksKey>> {
        let res = self.client.get(&self.url).send().await?.error_for_status()?;
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&res.bytes().await?)?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            use jsonwebtoken::jwk::{AlgorithmParameters, PublicKeyUse};
            // A JWKS is public: a symmetric ("oct") key in it would let anyone sign. Encryption keys are not for us.
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_))
                || matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption))
            {
                continue;
            }
            let alg = match jwk.common.key_algorithm {
                None => None,
                Some(a) => match a.to_string().parse::<Algorithm>() {
                    Ok(alg) => Some(alg),
                    Err(_) => continue, // an encryption algorithm
                },
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => keys.push(JwksKey { kid: jwk.common.key_id.clone(), alg, key }),
                Err(e) => tracing::warn!(kid = ?jwk.common.key_id, error = %e, "JWKS key skipped"),
            }
        }
        Ok(keys)
    }
}

/// Verifies tokens with the configured keys. Built once; cheap to share.
pub struct Verifier {
    hmac: Option<DecodingKey>,
    public: Option<DecodingKey>,
    /// The algorithms a token may be signed with: those the keys can verify, narrowed by
    /// `REALTIME_JWT_ALGORITHMS`. An HMAC algorithm only ever uses the secret and an asymmetric one only the
    /// public key, so a token signed "HS256" with the public key's PEM as the secret never verifies.
    algorithms: Vec<Algorithm>,
    jwks: Option<Jwks>,
    audience: Vec<String>,
    issuer: Vec<String>,
    allow_dev_tokens: bool,
    grace_secs: i64,
    /// When every accepted algorithm is an HMAC one (a secret and no public key or JWKS, the usual set-up):
    /// the validation for all of them, built once. The library checks the header's algorithm against it, so
    /// the header is not decoded a second time here to choose the key.
    hmac_only: Option<Validation>,
}

/// The validation of a token whose signature the library checks: exp, nbf and aud are checked by
/// [`Verifier::verify`] itself (at the `now` it is given, against every configured audience).
fn validation(algorithms: &[Algorithm]) -> Validation {
    let mut validation = Validation::new(algorithms[0]);
    validation.algorithms = algorithms.to_vec();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = LEEWAY_SECS as u64;
    validation.required_spec_claims.clear();
    validation
}

/// A refused token: the client hears "Invalid token: <reason>", a short class (expired, not yet valid, bad
/// signature, …); the detail (the JWT library's words, which may list what the server accepts) is logged once.
fn refused(reason: &str, detail: impl std::fmt::Display) -> AuthError {
    tracing::info!(reason, detail = %detail, "token refused");
    AuthError::Invalid(reason.to_string())
}

impl Verifier {
    pub fn new(cfg: &Config) -> anyhow::Result<Verifier> {
        let hmac = cfg.jwt_secret.as_ref().map(|s| DecodingKey::from_secret(s.as_bytes()));
        let mut possible: Vec<Algorithm> = Vec::new();
        if hmac.is_some() {
            possible.extend(HMAC_ALGS);
        }
        let public = match &cfg.jwt_public_key {
            None => None,
            Some(pem) => {
                if let Ok(k) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
                    possible.extend(RSA_ALGS);
                    Some(k)
                } else if let Ok(k) = DecodingKey::from_ec_pem(pem.as_bytes()) {
                    possible.extend(EC_ALGS);
                    Some(k)
                } else {
                    anyhow::bail!("REALTIME_JWT_PUBLIC_KEY is not an RSA or EC public key in PEM form");
                }
            }
        };
        let jwks = match &cfg.jwks_url {
            None => None,
            Some(url) => {
                possible.extend(RSA_ALGS.into_iter().chain(EC_ALGS).chain([Algorithm::EdDSA]));
                Some(Jwks {
                    url: url.clone(),
                    interval: cfg.jwks_refresh_interval,
                    client: reqwest::Client::builder().timeout(std::time::Duration::from_secs(5)).build()?,
                    keys: Default::default(),
                    fetched: Default::default(),
                    fetching: Default::default(),
                })
            }
        };
        let mut seen = Vec::new();
        possible.retain(|a| {
            if seen.contains(a) {
                false
            } else {
                seen.push(*a);
                true
            }
        });
        let algorithms = if cfg.jwt_algorithms.is_empty() {
            possible
        } else {
            let mut chosen = Vec::new();
            for name in &cfg.jwt_algorithms {
                let alg: Algorithm = name.parse().map_err(|_| {
                    anyhow::anyhow!("REALTIME_JWT_ALGORITHMS: {name:?} is not a JWT algorithm (HS256, RS256, ES256, …)")
                })?;
                if !possible.contains(&alg) {
                    anyhow::bail!(
                        "REALTIME_JWT_ALGORITHMS names {name}, but no configured key verifies it (HS* need \
                         REALTIME_JWT_SECRET, RS*/PS* an RSA and ES* an EC REALTIME_JWT_PUBLIC_KEY, or REALTIME_JWKS_URL)"
                    );
                }
                chosen.push(alg);
            }
            chosen
        };
        let hmac_only = (hmac.is_some() && !algorithms.is_empty() && algorithms.iter().all(|a| HMAC_ALGS.contains(a)))
            .then(|| validation(&algorithms));
        Ok(Verifier {
            hmac,
            public,
            hmac_only,
            algorithms,
            jwks,
            audience: cfg.jwt_audience.clone(),
            issuer: cfg.jwt_issuer.clone(),
            allow_dev_tokens: cfg.allow_dev_tokens,
            grace_secs: cfg.token_grace.as_secs() as i64,
        })
    }

    /// Loads the JWKS keys at start (a failure is logged; the next token with a `kid` tries again).
    pub async fn load_keys(&self) {
        if let Some(jwks) = &self.jwks {
            jwks.refresh(true).await;
        }
    }

    /// [`Verifier::verify`], after fetching the JWKS again when the token names a key the cache does not
    /// hold (or the cache is old), at most once per `REALTIME_JWKS_REFRESH_INTERVAL`.
    pub async fn check(&self, token: &str, now: i64) -> Result<Identity, AuthError> {
        if let Some(jwks) = &self.jwks {
            let bare = token.trim();
            let bare = bare.strip_prefix("Bearer ").unwrap_or(bare).trim();
            if bare.len() <= MAX_TOKEN_LEN
                && let Ok(header) = jsonwebtoken::decode_header(bare)
                && !HMAC_ALGS.contains(&header.alg)
                && self.algorithms.contains(&header.alg)
                && (jwks.stale() || jwks.find(header.kid.as_deref(), header.alg).is_none())
            {
                jwks.refresh(false).await;
            }
        }
        self.verify(token, now)
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
            return Err(refused("token too long", format_args!("{} bytes, over {MAX_TOKEN_LEN}", token.len())));
        }
        if let Some(user) = token.strip_prefix("user:") {
            if !self.allow_dev_tokens {
                return Err(AuthError::Invalid("dev tokens are disabled (set REALTIME_ALLOW_DEV_TOKENS=true)".into()));
            }
            let user = valid_id(user).map_err(|e| refused(&e, "dev token"))?;
            return Ok(Identity { user_id: user, session_id: None, name: None, avatar: None, exp: None });
        }
        let claims = match (&self.hmac_only, &self.hmac) {
            (Some(validation), Some(key)) => decode(token, key, validation)?,
            _ => self.decode_any(token)?,
        };
        self.check_claims(claims, now)
    }

    /// Decodes a token whose header says which of the keys verifies it.
    fn decode_any(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| refused("malformed token", e))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(refused(
                "algorithm not accepted",
                format_args!(
                    "{:?} is not among the algorithms the configured keys and REALTIME_JWT_ALGORITHMS allow",
                    header.alg
                ),
            ));
        }
        let fetched;
        let key = if HMAC_ALGS.contains(&header.alg) {
            self.hmac.as_ref()
        } else {
            fetched = self.jwks.as_ref().and_then(|j| j.find(header.kid.as_deref(), header.alg));
            fetched.as_ref().or(self.public.as_ref())
        };
        let Some(key) = key else {
            if self.jwks.is_some() {
                return Err(refused("unknown signing key", format_args!("kid {:?} is not in the JWKS", header.kid)));
            }
            return Err(refused("algorithm not accepted", format_args!("no key for {:?}", header.alg)));
        };
        decode(token, key, &validation(&[header.alg]))
    }

    /// exp (with the grace), nbf, issuer and audience; then who the claims name.
    fn check_claims(&self, claims: Claims, now: i64) -> Result<Identity, AuthError> {
        let exp = seconds_claim(&claims.exp, "exp")?;
        if let Some(exp) = exp
            && now > exp.saturating_add(self.grace_secs)
        {
            return Err(refused("token expired", format_args!("exp {exp}, now {now}, grace {} s", self.grace_secs)));
        }
        if let Some(nbf) = seconds_claim(&claims.nbf, "nbf")?
            && now.saturating_add(LEEWAY_SECS) < nbf
        {
            return Err(refused("token not yet valid (nbf)", format_args!("nbf {nbf}, now {now}")));
        }
        if !self.issuer.is_empty() {
            let iss = claims.iss.as_ref().and_then(Claim::as_str);
            if !iss.is_some_and(|i| self.issuer.iter().any(|want| want == i)) {
                return Err(refused("wrong issuer", format_args!("iss {iss:?} is not in REALTIME_JWT_ISSUER")));
            }
        }
        if !self.audience.is_empty() {
            let matches = |a: &str| self.audience.iter().any(|want| want == a);
            let ok = match &claims.aud {
                Some(Claim::Strings(list)) => list.iter().any(|a| matches(a)),
                Some(a) => a.as_str().is_some_and(matches),
                None => false,
            };
            if !ok {
                return Err(refused("wrong audience", "aud does not name an audience of REALTIME_JWT_AUDIENCE"));
            }
        }
        identity_from_claims(claims, exp)
    }

    pub fn grace_secs(&self) -> i64 {
        self.grace_secs
    }
}

/// A time claim (`exp`, `nbf`) in epoch seconds; a fraction is floored, anything but a number is malformed.
fn seconds_claim(claim: &Option<Claim>, key: &str) -> Result<Option<i64>, AuthError> {
    match claim {
        None | Some(Claim::Null) => Ok(None),
        Some(Claim::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f.floor() as i64))
            .map(Some)
            .ok_or_else(|| refused("malformed claims", format_args!("{key} is not a number of seconds"))),
        Some(_) => Err(refused("malformed claims", format_args!("{key} is not a number of seconds"))),
    }
}

/// A user id as it came: control characters anywhere (even at the ends) refuse it rather than being trimmed.
fn valid_id(id: &str) -> Result<String, String> {
    if id.chars().any(|c| c.is_control()) {
        return Err("user id contains control characters".into());
    }
    let id = id.trim();
    if id.is_empty() {
        return Err("user id is empty".into());
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!("user id is longer than {MAX_ID_LEN} bytes"));
    }
    Ok(id.to_string())
}

/// A profile claim (name, avatar, session id): trimmed, cut to 512 characters, control characters dropped
/// (they end up in stored rows, and PostgreSQL text cannot hold a NUL).
fn claim_str(claim: Option<Claim>) -> Option<String> {
    match claim? {
        Claim::String(s) => {
            let clean = clean_text(s);
            let trimmed = clean.trim();
            if trimmed.is_empty() {
                None
            } else if trimmed.len() == clean.len() && clean.len() <= 512 {
                Some(clean) // nothing to trim or cut: kept as it is
            } else {
                Some(trimmed.chars().take(512).collect())
            }
        }
        Claim::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The text without its control characters (the text itself when it has none, the common case).
fn clean_text(s: String) -> String {
    if s.chars().any(|c| c.is_control()) { s.chars().filter(|c| !c.is_control()).collect() } else { s }
}

/// The user id claim untouched (not trimmed or cut), so [`valid_id`] sees what the token says.
fn user_claim(claim: Option<Claim>) -> Option<String> {
    match claim? {
        Claim::String(s) if !s.trim().is_empty() => Some(s),
        Claim::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// User id from `userId`, else `sub`, else Hasura's `x-hasura-user-id`.
fn identity_from_claims(claims: Claims, exp: Option<i64>) -> Result<Identity, AuthError> {
    let user = user_claim(claims.user_id)
        .or_else(|| user_claim(claims.sub))
        .or_else(|| user_claim(claims.hasura_user_id))
        .ok_or_else(|| refused("no user id claim (userId, sub or x-hasura-user-id)", "claims without a user id"))?;
    Ok(Identity {
        user_id: valid_id(&user).map_err(|e| refused(&e, "user id claim"))?,
        session_id: claim_str(claims.session_id),
        name: claim_str(claims.name).or_else(|| claim_str(claims.display_name)),
        avatar: claim_str(claims.picture).or_else(|| claim_str(claims.avatar_url)),
        exp,
    })
}

/// Verifies the signature and decodes the claims, both by `jsonwebtoken`; its errors become the short reasons
/// a client hears.
fn decode(token: &str, key: &DecodingKey, validation: &Validation) -> Result<Claims, AuthError> {
    jsonwebtoken::decode::<Claims>(token, key, validation).map(|data| data.claims).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind as K;
        let reason = match e.kind() {
            K::InvalidSignature => "bad signature",
            K::ImmatureSignature => "token not yet valid (nbf)",
            K::ExpiredSignature => "token expired",
            K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) => "malformed token",
            K::InvalidClaimFormat(_) | K::MissingRequiredClaim(_) => "malformed claims",
            K::InvalidAlgorithm | K::MissingAlgorithm | K::InvalidAlgorithmName => "algorithm not accepted",
            _ => "token could not be verified",
        };
        refused(reason, e)
    })
}

/// The value of a claim this server reads, as far as it reads it: the JSON text and number kept, an array kept
/// as its strings (`aud`), anything else only noted.
#[derive(Debug, Clone, PartialEq)]
enum Claim {
    Null,
    String(String),
    Number(serde_json::Number),
    /// An array: its string elements.
    Strings(Vec<String>),
    /// A boolean or an object.
    Other,
}

impl Claim {
    fn as_str(&self) -> Option<&str> {
        match self {
            Claim::String(s) => Some(s),
            _ => None,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Claim {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Claim, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Claim;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Claim, E> {
                Ok(Claim::Null)
            }
            fn visit_none<E>(self) -> Result<Claim, E> {
                Ok(Claim::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Claim, E> {
                Ok(Claim::Other)
            }
            fn visit_str<E>(self, v: &str) -> Result<Claim, E> {
                Ok(Claim::String(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Claim, E> {
                Ok(Claim::String(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Claim, E> {
                Ok(Claim::Number(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Claim, E> {
                Ok(Claim::Number(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Claim, E> {
                // As serde_json's own `Value` reads it: a number that is not finite would be null.
                Ok(serde_json::Number::from_f64(v).map_or(Claim::Null, Claim::Number))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Claim, A::Error> {
                let mut strings = Vec::new();
                while let Some(item) = seq.next_element::<Claim>()? {
                    if let Claim::String(s) = item {
                        strings.push(s);
                    }
                }
                Ok(Claim::Strings(strings))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Claim, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(Claim::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// The claims of a token, parsed once, into what the server reads of them (the rest of the payload is skipped).
/// A key given twice counts with its last value, as in a JSON object read whole.
#[derive(Debug, Default)]
struct Claims {
    user_id: Option<Claim>,
    sub: Option<Claim>,
    /// `x-hasura-user-id` in Hasura's claims object.
    hasura_user_id: Option<Claim>,
    session_id: Option<Claim>,
    name: Option<Claim>,
    display_name: Option<Claim>,
    picture: Option<Claim>,
    avatar_url: Option<Claim>,
    exp: Option<Claim>,
    nbf: Option<Claim>,
    iss: Option<Claim>,
    aud: Option<Claim>,
}

/// Hasura's claims object: its user id, when it is an object that has one.
struct HasuraClaims(Option<Claim>);

/// A key of the claims, or of Hasura's claims object.
enum Key {
    UserId,
    Sub,
    Hasura,
    HasuraUserId,
    SessionId,
    Name,
    DisplayName,
    Picture,
    AvatarUrl,
    Exp,
    Nbf,
    Iss,
    Aud,
    Other,
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a claim name")
            }
            fn visit_str<E>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "userId" => Key::UserId,
                    "sub" => Key::Sub,
                    "https://hasura.io/jwt/claims" => Key::Hasura,
                    "x-hasura-user-id" => Key::HasuraUserId,
                    "sessionId" => Key::SessionId,
                    "name" => Key::Name,
                    "displayName" => Key::DisplayName,
                    "picture" => Key::Picture,
                    "avatarUrl" => Key::AvatarUrl,
                    "exp" => Key::Exp,
                    "nbf" => Key::Nbf,
                    "iss" => Key::Iss,
                    "aud" => Key::Aud,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

impl<'de> serde::Deserialize<'de> for HasuraClaims {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<HasuraClaims, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = HasuraClaims;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<HasuraClaims, A::Error> {
                let mut user = None;
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::HasuraUserId => user = Some(map.next_value::<Claim>()?),
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(HasuraClaims(user))
            }
            // Anything but an object names no user (and is read past).
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<HasuraClaims, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(HasuraClaims(None))
            }
            fn visit_unit<E>(self) -> Result<HasuraClaims, E> {
                Ok(HasuraClaims(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<HasuraClaims, E> {
                Ok(HasuraClaims(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<HasuraClaims, E> {
                Ok(HasuraClaims(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<HasuraClaims, E> {
                Ok(HasuraClaims(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<HasuraClaims, E> {
                Ok(HasuraClaims(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<HasuraClaims, E> {
                Ok(HasuraClaims(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> serde::Deserialize<'de> for Claims {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Claims, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Claims;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object of claims")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Claims, A::Error> {
                let mut c = Claims::default();
                while let Some(key) = map.next_key::<Key>()? {
                    let slot = match key {
                        Key::UserId => &mut c.user_id,
                        Key::Sub => &mut c.sub,
                        Key::SessionId => &mut c.session_id,
                        Key::Name => &mut c.name,
                        Key::DisplayName => &mut c.display_name,
                        Key::Picture => &mut c.picture,
                        Key::AvatarUrl => &mut c.avatar_url,
                        Key::Exp => &mut c.exp,
                        Key::Nbf => &mut c.nbf,
                        Key::Iss => &mut c.iss,
                        Key::Aud => &mut c.aud,
                        Key::Hasura => {
                            c.hasura_user_id = map.next_value::<HasuraClaims>()?.0;
                            continue;
                        }
                        Key::HasuraUserId | Key::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value::<Claim>()?);
                }
                Ok(c)
            }
            // A payload that is a JSON array names nobody (the library's own check decides whether it is
            // malformed); any other non-object is refused as malformed.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Claims, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Claims::default())
            }
        }
        d.deserialize_any(V)
    }
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
    use serde_json::Value;
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

    /// exp and nbf are both read at the `now` the caller gives (the corpus replay checks tokens at a fixed
    /// time; the library's own nbf check read the clock and let a not-yet-valid token through there).
    #[test]
    fn nbf_is_checked_at_the_given_time() {
        let v = verifier(&[("REALTIME_JWT_SECRET", "s")]);
        let at = 1_767_225_600; // long before this test runs
        let t = sign("s", serde_json::json!({"sub": "u", "nbf": at + 3600}));
        assert_eq!(v.verify(&t, at), Err(AuthError::Invalid("token not yet valid (nbf)".into())));
        assert!(v.verify(&t, at + 3600 - LEEWAY_SECS).is_ok(), "within the leeway");
        assert!(v.verify(&t, at + 3600).is_ok());
        let t = sign("s", serde_json::json!({"sub": "u", "nbf": "soon"}));
        assert_eq!(v.verify(&t, at), Err(AuthError::Invalid("malformed claims".into())));
    }

    #[test]
    fn unsigned_tokens_are_never_decoded() {
        // The original decoded unsigned tokens when no secret was set.
        let v = verifier(&[("REALTIME_ALLOW_DEV_TOKENS", "true")]);
        let t = sign("anything", serde_json::json!({"sub": "u"}));
        assert_eq!(v.verify(&t, now()), Err(AuthError::Invalid("algorithm not accepted".into())));
    }

    #[test]
    fn refusals_name_a_reason_never_the_library_words() {
        let v = verifier(&[("REALTIME_JWT_SECRET", "s"), ("REALTIME_TOKEN_GRACE", "0")]);
        let reason = |t: &str| match v.verify(t, now()) {
            Err(AuthError::Invalid(r)) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(reason(&sign("other", serde_json::json!({"sub": "u"}))), "bad signature");
        assert_eq!(
            reason(&sign("s", serde_json::json!({"sub": "u", "nbf": now() + 3600}))),
            "token not yet valid (nbf)"
        );
        assert_eq!(reason("eyJ!!!.@@@.###"), "malformed token");
        assert_eq!(reason("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1In0."), "malformed token", "alg none");
        assert_eq!(
            reason(&sign("s", serde_json::json!({"name": "x"}))),
            "no user id claim (userId, sub or x-hasura-user-id)"
        );
        assert_eq!(reason(&sign("s", serde_json::json!({"sub": "a\u{7}b"}))), "user id contains control characters");
        assert_eq!(reason(&sign("s", serde_json::json!({"sub": "u\n"}))), "user id contains control characters");
        assert_eq!(reason(&sign("s", serde_json::json!({"sub": "x".repeat(257)}))), "user id is longer than 256 bytes");
        assert_eq!(reason(&"a".repeat(MAX_TOKEN_LEN + 1)), "token too long");
    }

    #[test]
    fn audience_issuer_and_algorithms_are_enforced_when_set() {
        let v = verifier(&[
            ("REALTIME_JWT_SECRET", "s"),
            ("REALTIME_JWT_AUDIENCE", "realtime, chat"),
            ("REALTIME_JWT_ISSUER", "https://auth.test"),
            ("REALTIME_JWT_ALGORITHMS", "HS512"),
        ]);
        let sign512 = |claims: Value| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(Algorithm::HS512),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(b"s"),
            )
            .unwrap()
        };
        let iss = "https://auth.test";
        assert!(v.verify(&sign512(serde_json::json!({"sub": "u", "aud": "chat", "iss": iss})), now()).is_ok());
        assert!(
            v.verify(&sign512(serde_json::json!({"sub": "u", "aud": ["x", "realtime"], "iss": iss})), now()).is_ok()
        );
        let reason = |t: &str| v.verify(t, now()).unwrap_err().to_string();
        assert_eq!(reason(&sign512(serde_json::json!({"sub": "u", "iss": iss}))), "Invalid token: wrong audience");
        assert_eq!(
            reason(&sign512(serde_json::json!({"sub": "u", "aud": "x", "iss": iss}))),
            "Invalid token: wrong audience"
        );
        assert_eq!(reason(&sign512(serde_json::json!({"sub": "u", "aud": "chat"}))), "Invalid token: wrong issuer");
        let hs256 = sign("s", serde_json::json!({"sub": "u", "aud": "chat", "iss": iss}));
        assert_eq!(reason(&hs256), "Invalid token: algorithm not accepted");
    }

    #[test]
    fn an_algorithm_without_a_key_or_unknown_stops_the_start() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let cfg =
            Config::from_map(&map(&[("REALTIME_JWT_SECRET", "s"), ("REALTIME_JWT_ALGORITHMS", "RS256")])).unwrap();
        let err = Verifier::new(&cfg).err().unwrap().to_string();
        assert!(err.contains("RS256") && err.contains("REALTIME_JWT_PUBLIC_KEY"), "{err}");
        let cfg =
            Config::from_map(&map(&[("REALTIME_JWT_SECRET", "s"), ("REALTIME_JWT_ALGORITHMS", "HS999")])).unwrap();
        assert!(Verifier::new(&cfg).err().unwrap().to_string().contains("HS999"));
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
    fn profile_claims_lose_control_characters() {
        let v = verifier(&[("REALTIME_JWT_SECRET", "s")]);
        let t = sign("s", serde_json::json!({"sub": "u", "name": "An\u{0}n\n", "sessionId": "\u{0}"}));
        let id = v.verify(&t, now()).unwrap();
        assert_eq!((id.name.as_deref(), id.session_id.as_deref()), (Some("Ann"), None));
    }

    /// The claims are read once, into what the server uses; they say what a JSON object read whole says.
    #[test]
    fn claims_of_every_shape_read_as_a_json_object_would() {
        let v =
            verifier(&[("REALTIME_JWT_SECRET", "s"), ("REALTIME_JWT_AUDIENCE", "chat"), ("REALTIME_JWT_ISSUER", "i")]);
        let id = |payload: &str| {
            let b64 = |b: &[u8]| {
                const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                let mut out = String::new();
                for chunk in b.chunks(3) {
                    let n = chunk.iter().enumerate().fold(0u32, |n, (i, &x)| n | (x as u32) << (16 - 8 * i));
                    for i in 0..=chunk.len() {
                        out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                    }
                }
                out
            };
            let message = format!("{}.{}", b64(br#"{"alg":"HS256","typ":"JWT"}"#), b64(payload.as_bytes()));
            let signature = jsonwebtoken::crypto::sign(
                message.as_bytes(),
                &jsonwebtoken::EncodingKey::from_secret(b"s"),
                Algorithm::HS256,
            )
            .unwrap();
            v.verify(&format!("{message}.{signature}"), now())
        };
        let user = |payload: &str| id(payload).map(|i| (i.user_id, i.name, i.avatar, i.session_id));
        let ok = r#""aud":"chat","iss":"i""#;
        // The last of a key given twice counts (the library's own check refuses a registered claim given twice);
        // a number is a user id; a blank userId falls back to sub.
        assert_eq!(user(&format!(r#"{{{ok},"userId":"a","userId":"b"}}"#)).unwrap().0, "b");
        assert_eq!(id(&format!(r#"{{{ok},"sub":"a","sub":"b"}}"#)), Err(AuthError::Invalid("malformed token".into())));
        assert_eq!(user(&format!(r#"{{{ok},"userId":42}}"#)).unwrap().0, "42");
        assert_eq!(user(&format!(r#"{{{ok},"userId":" ","sub":"s"}}"#)).unwrap().0, "s");
        assert_eq!(user(&format!(r#"{{{ok},"userId":true,"sub":1.5}}"#)).unwrap().0, "1.5");
        // Escaped keys are the keys they spell; unknown keys of any shape are read past.
        assert_eq!(user(&format!(r#"{{{ok},"sub":"e","x":{{"y":[1,{{}}]}}}}"#)).unwrap().0, "e");
        // Hasura's claims: only an object names a user; the last object given counts.
        let hasura = r#""https://hasura.io/jwt/claims""#;
        assert_eq!(user(&format!(r#"{{{ok},{hasura}:{{"x-hasura-user-id":"h","sub":"no"}}}}"#)).unwrap().0, "h");
        assert_eq!(
            id(&format!(r#"{{{ok},{hasura}:["x-hasura-user-id"],"x-hasura-user-id":"top"}}"#)),
            Err(AuthError::Invalid("no user id claim (userId, sub or x-hasura-user-id)".into()))
        );
        assert_eq!(
            id(&format!(r#"{{{ok},{hasura}:{{"x-hasura-user-id":"h"}},{hasura}:{{}}}}"#)),
            Err(AuthError::Invalid("no user id claim (userId, sub or x-hasura-user-id)".into()))
        );
        // Profile claims: numbers kept as text, other shapes absent, name before displayName.
        let got =
            user(&format!(r#"{{{ok},"sub":"u","name":{{}},"displayName":" Dee ","picture":7,"sessionId":["x"]}}"#))
                .unwrap();
        assert_eq!((got.1.as_deref(), got.2.as_deref(), got.3), (Some("Dee"), Some("7"), None));
        let long = "é".repeat(600);
        let got = user(&format!(r#"{{{ok},"sub":"u","name":"{long}"}}"#)).unwrap();
        assert_eq!(got.1.unwrap().chars().count(), 512);
        // exp: null is none, a huge number never expires, text or a boolean is malformed.
        assert!(id(&format!(r#"{{{ok},"sub":"u","exp":null}}"#)).is_ok());
        assert!(id(&format!(r#"{{{ok},"sub":"u","exp":1e300}}"#)).is_ok());
        assert!(id(&format!(r#"{{{ok},"sub":"u","exp":18446744073709551615}}"#)).is_ok());
        for bad in [r#""1""#, "true"] {
            assert_eq!(
                id(&format!(r#"{{{ok},"sub":"u","exp":{bad}}}"#)),
                Err(AuthError::Invalid("malformed claims".into())),
                "exp {bad}"
            );
        }
        // aud: a string or any string of an array; iss: only a string.
        assert!(id(r#"{"sub":"u","iss":"i","aud":[1,["chat"],"chat"]}"#).is_ok());
        assert_eq!(id(r#"{"sub":"u","iss":"i","aud":[1,["chat"]]}"#), Err(AuthError::Invalid("wrong audience".into())));
        assert_eq!(id(r#"{"sub":"u","iss":["i"],"aud":"chat"}"#), Err(AuthError::Invalid("wrong issuer".into())));
        // A payload that is not an object.
        assert_eq!(id(r#""u""#), Err(AuthError::Invalid("malformed token".into())));
        assert_eq!(id("null"), Err(AuthError::Invalid("malformed token".into())));
    }

    #[test]
    fn minted_tokens_verify() {
        let v = verifier(&[("REALTIME_JWT_SECRET", "s")]);
        let t = mint_hs256("s", "u9", Some("Nine"), 3600).unwrap();
        let id = v.verify(&t, now()).unwrap();
        assert_eq!((id.user_id.as_str(), id.name.as_deref()), ("u9", Some("Nine")));
    }
}
