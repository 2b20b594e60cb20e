//! Configuration from the environment (and a `.env` file).
//!
//! Every variable the server reads is declared once in [`VARS`], with its default and meaning. The same table
//! produces `.env.example`, `config check`, and the `envVars` of `plugin.json` (tests compare them), so the
//! documentation cannot drift from the code. Invalid values are refused at start with a message naming the
//! variable and the expected form.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// One environment variable the server reads.
#[derive(Debug, Clone, Copy)]
pub struct Var {
    pub name: &'static str,
    /// Default as it would be written in `.env` (empty: unset).
    pub default: &'static str,
    pub help: &'static str,
    /// Masked by `config check` and in logs.
    pub secret: bool,
}

const fn v(name: &'static str, default: &'static str, help: &'static str) -> Var {
    Var { name, default, help, secret: false }
}
const fn secret(name: &'static str, help: &'static str) -> Var {
    Var { name, default: "", help, secret: true }
}

/// Every variable the server reads, in the order `.env.example` lists them.
pub const VARS: &[Var] = &[
    v("REALTIME_PORT", "3101", "TCP port for Socket.IO and HTTP (falls back to PORT)"),
    v("PORT", "", "fallback for REALTIME_PORT (written by the nself CLI)"),
    v("REALTIME_HOST", "0.0.0.0", "address to bind"),
    v("REALTIME_CORS_ORIGIN", "*", "allowed origins, comma separated; * allows any (auth is by token, not cookie)"),
    v(
        "REALTIME_TRUSTED_PROXIES",
        "127.0.0.1,::1",
        "reverse proxies (IPs or CIDR blocks, comma separated; none = no proxy) whose X-Forwarded-For is believed",
    ),
    v(
        "REALTIME_REDIS_URL",
        "",
        "Redis URL (redis://[:password@]host:port/db); when set, nodes share fan-out, presence and typing \
         through it (requires PostgreSQL)",
    ),
    v("REALTIME_REDIS_HOST", "", "Redis host, used when REALTIME_REDIS_URL is unset"),
    v("REALTIME_REDIS_PORT", "6379", "Redis port (with REALTIME_REDIS_HOST)"),
    v("REALTIME_REDIS_DB", "0", "Redis database number (with REALTIME_REDIS_HOST)"),
    secret("REALTIME_REDIS_PASSWORD", "Redis password (with REALTIME_REDIS_HOST)"),
    v("REALTIME_REDIS_PREFIX", "nself-realtime", "prefix of every Redis key and channel (one per deployment)"),
    v("REALTIME_NODE_TIMEOUT", "10000", "ms without a heartbeat after which the other nodes take a node for dead"),
    secret("REALTIME_JWT_SECRET", "HMAC secret for HS256/HS384/HS512 tokens"),
    secret("REALTIME_JWT_PUBLIC_KEY", "PEM public key (or a path to one) for RS256/ES256 tokens"),
    v(
        "REALTIME_JWT_ALGORITHMS",
        "",
        "accepted token algorithms, comma separated (e.g. RS256); empty = every one the configured keys verify",
    ),
    v(
        "REALTIME_JWKS_URL",
        "",
        "http:// or https:// URL of the auth service's JWKS (e.g. http://auth:4000/.well-known/jwks.json); keys follow rotation; https trusts the system's CAs (SSL_CERT_FILE names another bundle)",
    ),
    v(
        "REALTIME_JWKS_REFRESH_INTERVAL",
        "60000",
        "ms: the JWKS is fetched at most once per interval (a token with an unknown kid asks for a fetch)",
    ),
    v("REALTIME_JWT_AUDIENCE", "", "when set, a token's aud must name one of these (comma separated)"),
    v("REALTIME_JWT_ISSUER", "", "when set, a token's iss must be one of these (comma separated)"),
    v("REALTIME_ALLOW_DEV_TOKENS", "false", "accept the nchat dev token `user:<id>` (development only)"),
    v("REALTIME_ALLOW_ANONYMOUS", "false", "admit sockets without a token (read-only, public rooms)"),
    v("REALTIME_TOKEN_GRACE", "60000", "ms a session may outlive its token's exp before it is ended"),
    secret("REALTIME_API_KEY", "key for /api/* (X-API-Key or Authorization: Bearer)"),
    v("REALTIME_ADMIN_UI", "false", "serve the Socket.IO Admin UI protocol on the /admin namespace"),
    v("REALTIME_ADMIN_USER", "admin", "user name for the Admin UI and /dashboard"),
    secret(
        "REALTIME_ADMIN_PASSWORD",
        "password for the Admin UI and /dashboard (unset: REALTIME_API_KEY); neither is ever open without one",
    ),
    v(
        "REALTIME_ADMIN_UI_ORIGINS",
        "https://admin.socket.io",
        "origins allowed to open the Admin UI (comma list; sent with credentials, so never *)",
    ),
    v("REALTIME_PING_INTERVAL", "25000", "Engine.IO ping interval, ms"),
    v("REALTIME_PING_TIMEOUT", "20000", "Engine.IO ping timeout, ms"),
    v("REALTIME_MAX_CONNECTIONS", "10000", "maximum concurrent sockets; 0 = unlimited"),
    v(
        "REALTIME_WRITE_TIMEOUT",
        "10000",
        "ms a client may read nothing while the server has data for it before its connection is closed",
    ),
    v(
        "REALTIME_MAX_BUFFER",
        "4096",
        "packets queued for one socket; past it its packets are dropped until REALTIME_WRITE_TIMEOUT closes it",
    ),
    v(
        "REALTIME_MAX_BUFFER_BYTES",
        "1048576",
        "bytes of messages queued for one socket; past it the connection is closed (a slow consumer); 0 = no byte bound",
    ),
    v(
        "REALTIME_CONNECT_TIMEOUT",
        "10000",
        "ms an Engine.IO session may live without joining (Socket.IO CONNECT) before it is closed",
    ),
    v("REALTIME_MAX_PAYLOAD", "2097152", "largest frame or polling body in bytes; larger closes the connection"),
    v("REALTIME_MAX_MESSAGE_LENGTH", "16000", "largest message content in bytes"),
    v("REALTIME_RATE_LIMIT", "600", "new connections per IP per minute; 0 = unlimited"),
    v("REALTIME_RATE_LIMIT_ENABLED", "true", "per-user event rate limit on or off"),
    v("REALTIME_RATE_LIMIT_POINTS", "600", "events a user may send per REALTIME_RATE_LIMIT_DURATION"),
    v("REALTIME_RATE_LIMIT_DURATION", "60", "rate limit window, seconds"),
    v("REALTIME_AUTO_CREATE_ROOMS", "true", "create a public room on its first join"),
    v("REALTIME_ENABLE_PRESENCE", "true", "presence events on or off"),
    v("REALTIME_ENABLE_TYPING", "true", "typing events on or off"),
    v("REALTIME_ENABLE_COMPRESSION", "true", "gzip HTTP responses (long-polling and API) when the client accepts it"),
    v("REALTIME_TYPING_TIMEOUT", "5000", "ms after which a typing entry expires"),
    v("REALTIME_TYPING_COALESCE", "250", "at most one typing event per room per this many ms"),
    v("REALTIME_CALL_RING_TIMEOUT", "30000", "ms a call rings before nobody answering ends it (call:timeout)"),
    v("REALTIME_PRESENCE_HEARTBEAT", "30000", "ms between client presence heartbeats"),
    v("REALTIME_PRESENCE_TIMEOUT", "300000", "ms without a heartbeat before a user shows as away"),
    v("REALTIME_PRESENCE_OFFLINE_GRACE", "5000", "ms after the last socket closes before offline is announced"),
    v(
        "REALTIME_PRESENCE_COALESCE",
        "400",
        "ms a presence change waits for further changes before it is announced (never over 2 s after the first)",
    ),
    v(
        "REALTIME_BATCH_SIZE",
        "100",
        "most messages written in one database transaction (at most a tenth of them from one user: users take turns)",
    ),
    v("REALTIME_RECEIPT_FLUSH_INTERVAL", "1000", "ms between batched writes of read watermarks and deliveries"),
    v("REALTIME_MESSAGE_RETENTION_DAYS", "90", "days messages are kept (and recoverable by sync); 0 = forever"),
    v("REALTIME_EVENT_RETENTION_DAYS", "30", "days audit events are kept; 0 = forever"),
    v("REALTIME_RETENTION_INTERVAL", "3600", "seconds between retention passes (the first runs at start)"),
    v("REALTIME_LOG_EVENTS", "true", "write audit events to the events table"),
    v("REALTIME_LOG_EVENT_TYPES", "connect,disconnect,error", "which audit events to write (comma list, * = all)"),
    v("REALTIME_HEALTH_PATH", "/health", "path of the health endpoint"),
    v("REALTIME_METRICS_PATH", "/metrics", "path of the Prometheus metrics endpoint"),
    v("REALTIME_DATA_DIR", "./data", "directory for the SQLite database and the pid file"),
    v("REALTIME_LOG_DIR", "", "directory for `server start` log files (default: the data dir)"),
    v("LOG_LEVEL", "info", "trace, debug, info, warn or error (or a tracing filter)"),
    v("LOG_FORMAT", "text", "text or json (stdout); under systemd logs go to journald"),
    secret("DATABASE_URL", "PostgreSQL URL; when neither this nor POSTGRES_HOST is set, SQLite is used"),
    v("POSTGRES_HOST", "", "PostgreSQL host (used when DATABASE_URL is unset)"),
    v("POSTGRES_PORT", "5432", "PostgreSQL port"),
    v("POSTGRES_DB", "nself", "PostgreSQL database"),
    v("POSTGRES_USER", "postgres", "PostgreSQL user"),
    secret("POSTGRES_PASSWORD", "PostgreSQL password"),
];

/// Percent-encodes everything but RFC 3986 unreserved characters (URL paths and credentials).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Where the server keeps its data.
#[derive(Debug, Clone, PartialEq)]
pub enum Database {
    Postgres { url: String },
    Sqlite { path: PathBuf },
}

impl Database {
    /// URL for sqlx; the SQLite file is created when missing.
    pub fn url(&self) -> String {
        match self {
            Database::Postgres { url } => url.clone(),
            Database::Sqlite { path } => format!("sqlite://{}?mode=rwc", path.display()),
        }
    }
    pub fn dialect(&self) -> &'static str {
        match self {
            Database::Postgres { .. } => "postgres",
            Database::Sqlite { .. } => "sqlite",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cors {
    Any,
    List(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub cors: Cors,
    pub trusted_proxies: crate::domain::proxies::TrustedProxies,
    /// Redis, from REALTIME_REDIS_URL or REALTIME_REDIS_HOST and its parts: several nodes share it.
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    pub node_timeout: Duration,
    pub jwt_secret: Option<String>,
    pub jwt_public_key: Option<String>,
    pub jwt_algorithms: Vec<String>,
    pub jwks_url: Option<String>,
    pub jwks_refresh_interval: Duration,
    pub jwt_audience: Vec<String>,
    pub jwt_issuer: Vec<String>,
    pub allow_dev_tokens: bool,
    pub allow_anonymous: bool,
    pub token_grace: Duration,
    pub api_key: Option<String>,
    pub admin_ui: bool,
    pub admin_user: String,
    pub admin_password: Option<String>,
    pub admin_ui_origins: Vec<String>,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub max_connections: usize,
    /// An Engine.IO session that has not sent its Socket.IO CONNECT by then is closed.
    pub connect_timeout: Duration,
    /// A connection that cannot be written to for this long (its client reads nothing) is closed.
    pub write_timeout: Duration,
    /// Packets queued for one socket at most.
    pub max_buffer: usize,
    /// Bytes of messages queued for one socket before its connection is closed (0: no byte bound).
    pub max_buffer_bytes: usize,
    pub max_payload: u64,
    pub max_message_length: usize,
    pub connect_rate_per_ip: u32,
    pub rate_limit_enabled: bool,
    pub rate_limit_points: u32,
    pub rate_limit_duration: Duration,
    pub auto_create_rooms: bool,
    pub enable_presence: bool,
    pub enable_typing: bool,
    pub enable_compression: bool,
    pub typing_timeout: Duration,
    pub typing_coalesce: Duration,
    pub call_ring_timeout: Duration,
    pub presence_heartbeat: Duration,
    pub presence_timeout: Duration,
    pub presence_offline_grace: Duration,
    pub presence_coalesce: Duration,
    pub receipt_flush_interval: Duration,
    pub retention_interval: Duration,
    pub batch_size: usize,
    pub message_retention_days: u32,
    pub event_retention_days: u32,
    pub log_events: bool,
    pub log_event_types: Vec<String>,
    pub health_path: String,
    pub metrics_path: String,
    pub data_dir: PathBuf,
    pub log_dir: PathBuf,
    pub log_level: String,
    pub log_format: LogFormat,
    pub database: Database,
}

/// All problems found in the environment, each naming its variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigError(pub Vec<String>);

/// Reads variables through a lookup function, so tests can feed a map instead of the process environment.
struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<String>,
}

impl Reader<'_> {
    fn spec(name: &str) -> &'static Var {
        VARS.iter().find(|v| v.name == name).unwrap_or_else(|| panic!("{name} is not declared in config::VARS"))
    }

    /// The raw value: set and non-empty, else the declared default (None when that is empty).
    fn raw(&self, name: &str) -> Option<String> {
        let spec = Self::spec(name);
        match (self.lookup)(name).map(|s| s.trim().to_string()) {
            Some(s) if !s.is_empty() => Some(s),
            _ if spec.default.is_empty() => None,
            _ => Some(spec.default.to_string()),
        }
    }

    fn set(&self, name: &str) -> Option<String> {
        Self::spec(name);
        (self.lookup)(name).map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    }

    fn string(&self, name: &str) -> String {
        self.raw(name).unwrap_or_default()
    }

    fn parse<T: std::str::FromStr + Default>(&mut self, name: &str, what: &str) -> T {
        let raw = self.raw(name).unwrap_or_default();
        match raw.parse::<T>() {
            Ok(v) => v,
            Err(_) => {
                self.errors.push(format!("{name}={raw:?} is not {what}"));
                T::default()
            }
        }
    }

    fn bool(&mut self, name: &str) -> bool {
        let raw = self.raw(name).unwrap_or_default();
        match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => {
                self.errors.push(format!("{name}={raw:?} is not a boolean (use true or false)"));
                false
            }
        }
    }

    /// A comma-separated list (empty when unset).
    fn list(&self, name: &str) -> Vec<String> {
        self.string(name).split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
    }

    fn millis(&mut self, name: &str) -> Duration {
        Duration::from_millis(self.parse::<u64>(name, "a whole number of milliseconds"))
    }

    fn path(&self, name: &str) -> String {
        let p = self.string(name);
        if p.starts_with('/') { p } else { format!("/{p}") }
    }
}

impl Config {
    /// Loads from the process environment, after a `.env` file in the working directory if there is one
    /// (variables already set win over the file).
    pub fn from_env() -> Result<Config, ConfigError> {
        let _ = dotenvy::dotenv();
        Config::from_lookup(&|name| std::env::var(name).ok())
    }

    pub fn from_map(map: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        Config::from_lookup(&|name| map.get(name).cloned())
    }

    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut r = Reader { lookup, errors: Vec::new() };

        let port = match r.set("REALTIME_PORT").or_else(|| r.set("PORT")) {
            Some(p) => p.parse::<u16>().unwrap_or_else(|_| {
                r.errors.push(format!("REALTIME_PORT (or PORT)={p:?} is not a port number (0-65535)"));
                0
            }),
            None => 3101,
        };
        let cors = match r.string("REALTIME_CORS_ORIGIN").as_str() {
            "*" | "" => Cors::Any,
            list => Cors::List(list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()),
        };
        let trusted_proxies = crate::domain::proxies::TrustedProxies::parse(&r.string("REALTIME_TRUSTED_PROXIES"))
            .unwrap_or_else(|e| {
                r.errors.push(format!("REALTIME_TRUSTED_PROXIES: {e} (use addresses or blocks like 10.0.0.0/8)"));
                Default::default()
            });
        let redis_url = match r.set("REALTIME_REDIS_URL") {
            Some(url) => {
                if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://")) {
                    r.errors.push(format!("REALTIME_REDIS_URL={url:?} is not a redis:// or rediss:// URL"));
                }
                Some(url)
            }
            None => r.set("REALTIME_REDIS_HOST").map(|host| {
                let port: u16 = r.parse("REALTIME_REDIS_PORT", "a port number");
                let db: u32 = r.parse("REALTIME_REDIS_DB", "a Redis database number");
                let password =
                    r.set("REALTIME_REDIS_PASSWORD").map(|p| format!(":{}@", percent_encode(&p))).unwrap_or_default();
                let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
                format!("redis://{password}{host}:{port}/{db}")
            }),
        };
        let redis_prefix = r.string("REALTIME_REDIS_PREFIX");
        if redis_prefix.contains(['#', ' ']) {
            r.errors.push(format!("REALTIME_REDIS_PREFIX={redis_prefix:?} may not contain '#' or spaces"));
        }
        let jwt_secret = r.set("REALTIME_JWT_SECRET");
        let jwt_public_key = match r.set("REALTIME_JWT_PUBLIC_KEY") {
            Some(k) if k.contains("-----BEGIN") => Some(k.replace("\\n", "\n")),
            Some(path) => match std::fs::read_to_string(&path) {
                Ok(k) => Some(k),
                Err(e) => {
                    r.errors.push(format!(
                        "REALTIME_JWT_PUBLIC_KEY is neither a PEM key nor a readable file ({path}: {e})"
                    ));
                    None
                }
            },
            None => None,
        };
        let jwks_url = r.set("REALTIME_JWKS_URL");
        if let Some(url) = &jwks_url
            && !url.starts_with("http://")
            && !url.starts_with("https://")
        {
            r.errors.push(format!("REALTIME_JWKS_URL={url:?} is not an http:// or https:// URL"));
        }
        let allow_dev_tokens = r.bool("REALTIME_ALLOW_DEV_TOKENS");
        let allow_anonymous = r.bool("REALTIME_ALLOW_ANONYMOUS");

        let log_format = match r.string("LOG_FORMAT").to_ascii_lowercase().as_str() {
            "json" => LogFormat::Json,
            "text" | "" => LogFormat::Text,
            other => {
                r.errors.push(format!("LOG_FORMAT={other:?} is not text or json"));
                LogFormat::Text
            }
        };
        let data_dir = PathBuf::from(r.string("REALTIME_DATA_DIR"));
        let log_dir = r.set("REALTIME_LOG_DIR").map(PathBuf::from).unwrap_or_else(|| data_dir.clone());

        let database = if let Some(url) = r.set("DATABASE_URL") {
            if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                Database::Postgres { url }
            } else if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
                Database::Sqlite { path: PathBuf::from(path.split('?').next().unwrap_or(path)) }
            } else {
                r.errors.push("DATABASE_URL is not a postgres:// (or sqlite:) URL".to_string());
                Database::Sqlite { path: data_dir.join("realtime.db") }
            }
        } else if let Some(host) = r.set("POSTGRES_HOST") {
            let user = r.string("POSTGRES_USER");
            let password = r
                .set("POSTGRES_PASSWORD")
                .map(|p| format!(":{}", crate::config::percent_encode(&p)))
                .unwrap_or_default();
            let port: u16 = r.parse("POSTGRES_PORT", "a port number");
            let db = r.string("POSTGRES_DB");
            Database::Postgres {
                url: format!("postgres://{}{password}@{host}:{port}/{db}", crate::config::percent_encode(&user)),
            }
        } else {
            Database::Sqlite { path: data_dir.join("realtime.db") }
        };

        let cfg = Config {
            host: r.string("REALTIME_HOST"),
            port,
            cors,
            trusted_proxies,
            redis_url,
            redis_prefix,
            node_timeout: r.millis("REALTIME_NODE_TIMEOUT"),
            jwt_secret,
            jwt_public_key,
            jwt_algorithms: r.list("REALTIME_JWT_ALGORITHMS"),
            jwks_url,
            jwks_refresh_interval: r.millis("REALTIME_JWKS_REFRESH_INTERVAL").max(Duration::from_millis(100)),
            jwt_audience: r.list("REALTIME_JWT_AUDIENCE"),
            jwt_issuer: r.list("REALTIME_JWT_ISSUER"),
            allow_dev_tokens,
            allow_anonymous,
            token_grace: r.millis("REALTIME_TOKEN_GRACE"),
            api_key: r.set("REALTIME_API_KEY"),
            admin_ui: r.bool("REALTIME_ADMIN_UI"),
            admin_user: r.string("REALTIME_ADMIN_USER"),
            admin_password: r.set("REALTIME_ADMIN_PASSWORD"),
            admin_ui_origins: r
                .string("REALTIME_ADMIN_UI_ORIGINS")
                .split(',')
                .map(|s| s.trim().trim_end_matches('/').to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            ping_interval: r.millis("REALTIME_PING_INTERVAL"),
            ping_timeout: r.millis("REALTIME_PING_TIMEOUT"),
            max_connections: r.parse("REALTIME_MAX_CONNECTIONS", "a whole number"),
            connect_timeout: r.millis("REALTIME_CONNECT_TIMEOUT"),
            write_timeout: r.millis("REALTIME_WRITE_TIMEOUT"),
            max_buffer: r.parse("REALTIME_MAX_BUFFER", "a whole number of packets"),
            max_buffer_bytes: r.parse("REALTIME_MAX_BUFFER_BYTES", "a number of bytes"),
            max_payload: r.parse("REALTIME_MAX_PAYLOAD", "a number of bytes"),
            max_message_length: r.parse("REALTIME_MAX_MESSAGE_LENGTH", "a number of bytes"),
            connect_rate_per_ip: r.parse("REALTIME_RATE_LIMIT", "a whole number of connections per minute"),
            rate_limit_enabled: r.bool("REALTIME_RATE_LIMIT_ENABLED"),
            rate_limit_points: r.parse("REALTIME_RATE_LIMIT_POINTS", "a whole number"),
            rate_limit_duration: Duration::from_secs(
                r.parse::<u64>("REALTIME_RATE_LIMIT_DURATION", "a whole number of seconds"),
            ),
            auto_create_rooms: r.bool("REALTIME_AUTO_CREATE_ROOMS"),
            enable_presence: r.bool("REALTIME_ENABLE_PRESENCE"),
            enable_typing: r.bool("REALTIME_ENABLE_TYPING"),
            enable_compression: r.bool("REALTIME_ENABLE_COMPRESSION"),
            typing_timeout: r.millis("REALTIME_TYPING_TIMEOUT"),
            typing_coalesce: r.millis("REALTIME_TYPING_COALESCE"),
            call_ring_timeout: r.millis("REALTIME_CALL_RING_TIMEOUT"),
            presence_heartbeat: r.millis("REALTIME_PRESENCE_HEARTBEAT"),
            presence_timeout: r.millis("REALTIME_PRESENCE_TIMEOUT"),
            presence_offline_grace: r.millis("REALTIME_PRESENCE_OFFLINE_GRACE"),
            presence_coalesce: r.millis("REALTIME_PRESENCE_COALESCE"),
            receipt_flush_interval: r.millis("REALTIME_RECEIPT_FLUSH_INTERVAL").max(Duration::from_millis(10)),
            retention_interval: Duration::from_secs(
                r.parse::<u64>("REALTIME_RETENTION_INTERVAL", "a whole number of seconds").max(1),
            ),
            batch_size: r.parse("REALTIME_BATCH_SIZE", "a whole number"),
            message_retention_days: r.parse("REALTIME_MESSAGE_RETENTION_DAYS", "a whole number of days"),
            event_retention_days: r.parse("REALTIME_EVENT_RETENTION_DAYS", "a whole number of days"),
            log_events: r.bool("REALTIME_LOG_EVENTS"),
            log_event_types: r
                .string("REALTIME_LOG_EVENT_TYPES")
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            health_path: r.path("REALTIME_HEALTH_PATH"),
            metrics_path: r.path("REALTIME_METRICS_PATH"),
            data_dir,
            log_dir,
            log_level: r.string("LOG_LEVEL"),
            log_format,
            database,
        };

        if cfg.max_payload < 1024 {
            r.errors.push("REALTIME_MAX_PAYLOAD must be at least 1024 bytes".into());
        }
        if cfg.max_message_length == 0 {
            r.errors.push("REALTIME_MAX_MESSAGE_LENGTH must be above 0".into());
        }
        if cfg.rate_limit_enabled && (cfg.rate_limit_points == 0 || cfg.rate_limit_duration.is_zero()) {
            r.errors.push(
                "REALTIME_RATE_LIMIT_POINTS and REALTIME_RATE_LIMIT_DURATION must be above 0 \
                 (or set REALTIME_RATE_LIMIT_ENABLED=false)"
                    .into(),
            );
        }
        if cfg.batch_size == 0 {
            r.errors.push("REALTIME_BATCH_SIZE must be above 0".into());
        }
        if cfg.connect_timeout.is_zero() {
            r.errors.push("REALTIME_CONNECT_TIMEOUT must be above 0 (ms)".into());
        }
        if cfg.write_timeout.is_zero() {
            r.errors.push("REALTIME_WRITE_TIMEOUT must be above 0 (ms)".into());
        }
        if cfg.max_buffer == 0 {
            r.errors.push("REALTIME_MAX_BUFFER must be at least 1 (packets)".into());
        }
        if cfg.max_buffer_bytes != 0 && cfg.max_buffer_bytes < 1024 {
            r.errors.push("REALTIME_MAX_BUFFER_BYTES must be 0 (no byte bound) or at least 1024 bytes".into());
        }
        if cfg.ping_interval.is_zero() || cfg.ping_timeout.is_zero() {
            r.errors.push("REALTIME_PING_INTERVAL and REALTIME_PING_TIMEOUT must be above 0".into());
        }
        if cfg.redis_url.is_some() && matches!(cfg.database, Database::Sqlite { .. }) {
            r.errors.push(
                "Redis is configured (REALTIME_REDIS_URL or REALTIME_REDIS_HOST) but storage is SQLite: several nodes \
                 must share one message store, and a SQLite file belongs to one machine. Set DATABASE_URL (or \
                 POSTGRES_HOST) to a PostgreSQL server every node reaches, or unset the Redis variables to run a \
                 single node"
                    .into(),
            );
        }
        if cfg.redis_url.is_some() && cfg.node_timeout < Duration::from_secs(4) {
            r.errors.push(
                "REALTIME_NODE_TIMEOUT must be at least 4000 ms (nodes heartbeat every 3 s; a shorter timeout \
                 would take live nodes for dead)"
                    .into(),
            );
        }
        if cfg.admin_ui && cfg.admin_secret().is_none() {
            r.errors.push(
                "REALTIME_ADMIN_UI=true needs a password: set REALTIME_ADMIN_PASSWORD (or REALTIME_API_KEY)".into(),
            );
        }
        if cfg.admin_ui_origins.iter().any(|o| o == "*") {
            r.errors.push(
                "REALTIME_ADMIN_UI_ORIGINS cannot be *: the Admin UI connects with credentials; list its origins \
                 (e.g. https://admin.socket.io)"
                    .into(),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&cfg.log_level) {
            r.errors.push(format!("LOG_LEVEL={:?} is not a level or filter: {e}", cfg.log_level));
        }
        if r.errors.is_empty() { Ok(cfg) } else { Err(ConfigError(r.errors)) }
    }

    /// The server's auth would refuse every token: say so at start instead of at the first connection.
    pub fn auth_problem(&self) -> Option<String> {
        if self.jwt_secret.is_none()
            && self.jwt_public_key.is_none()
            && self.jwks_url.is_none()
            && !self.allow_dev_tokens
            && !self.allow_anonymous
        {
            Some(
                "REALTIME_JWT_SECRET is not set; set it (or REALTIME_JWT_PUBLIC_KEY), or REALTIME_ALLOW_DEV_TOKENS=true \
                 for development"
                    .into(),
            )
        } else {
            None
        }
    }

    /// The password of the Admin UI and `/dashboard`: `REALTIME_ADMIN_PASSWORD`, else the API key.
    pub fn admin_secret(&self) -> Option<&str> {
        self.admin_password.as_deref().or(self.api_key.as_deref())
    }

    pub fn pid_file(&self) -> PathBuf {
        self.data_dir.join("nself-realtime.pid")
    }

    pub fn log_file(&self) -> PathBuf {
        self.log_dir.join("nself-realtime.log")
    }

    /// Base URL a local CLI uses to reach this server's admin API.
    pub fn local_base_url(&self) -> String {
        let host = match self.host.as_str() {
            "0.0.0.0" | "::" | "" => "127.0.0.1",
            h => h,
        };
        format!("http://{host}:{}", self.port)
    }
}

/// Effective values of every variable, secrets masked, for `config check`.
pub fn describe(lookup: &dyn Fn(&str) -> Option<String>) -> Vec<(&'static str, String, &'static str)> {
    VARS.iter()
        .map(|var| {
            let set = lookup(var.name).filter(|s| !s.trim().is_empty());
            let (value, origin) = match set {
                Some(s) => (s, "env"),
                None => (var.default.to_string(), "default"),
            };
            let shown = if var.secret && !value.is_empty() { mask(var.name, &value) } else { value };
            (var.name, shown, origin)
        })
        .collect()
}

fn mask(name: &str, value: &str) -> String {
    if name == "DATABASE_URL" {
        // Keep the host visible, hide the password.
        if let Some((scheme, rest)) = value.split_once("://")
            && let Some((creds, host)) = rest.split_once('@')
        {
            let user = creds.split(':').next().unwrap_or("");
            return format!("{scheme}://{user}:****@{host}");
        }
        return value.to_string();
    }
    format!("**** ({} chars)", value.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_map(&map)
    }

    #[test]
    fn defaults_run_on_sqlite_in_data_dir() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.port, 3101);
        assert_eq!(c.database, Database::Sqlite { path: PathBuf::from("./data/realtime.db") });
        assert_eq!(c.cors, Cors::Any);
        assert_eq!(c.typing_timeout, Duration::from_millis(5000));
    }

    #[test]
    fn port_falls_back_to_port() {
        assert_eq!(cfg(&[("PORT", "4000")]).unwrap().port, 4000);
        assert_eq!(cfg(&[("PORT", "4000"), ("REALTIME_PORT", "5000")]).unwrap().port, 5000);
    }

    #[test]
    fn postgres_from_parts_or_url() {
        let c = cfg(&[("POSTGRES_HOST", "db"), ("POSTGRES_PASSWORD", "p@ss")]).unwrap();
        assert_eq!(c.database, Database::Postgres { url: "postgres://postgres:p%40ss@db:5432/nself".into() });
        let c = cfg(&[("DATABASE_URL", "postgres://u@h/d"), ("POSTGRES_HOST", "db")]).unwrap();
        assert_eq!(c.database, Database::Postgres { url: "postgres://u@h/d".into() });
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let err =
            cfg(&[("REALTIME_PORT", "abc"), ("REALTIME_ALLOW_ANONYMOUS", "maybe"), ("REALTIME_TYPING_TIMEOUT", "-1")])
                .unwrap_err()
                .to_string();
        assert!(err.contains("REALTIME_PORT"), "{err}");
        assert!(err.contains("REALTIME_ALLOW_ANONYMOUS"), "{err}");
        assert!(err.contains("REALTIME_TYPING_TIMEOUT"), "{err}");
    }

    #[test]
    fn outbound_byte_bound_defaults_to_a_mebibyte_and_0_lifts_it() {
        assert_eq!(cfg(&[]).unwrap().max_buffer_bytes, 1_048_576);
        assert_eq!(cfg(&[("REALTIME_MAX_BUFFER_BYTES", "0")]).unwrap().max_buffer_bytes, 0);
        let err = cfg(&[("REALTIME_MAX_BUFFER_BYTES", "100")]).unwrap_err().to_string();
        assert!(err.contains("REALTIME_MAX_BUFFER_BYTES must be 0 (no byte bound) or at least 1024 bytes"), "{err}");
    }

    #[test]
    fn redis_from_url_or_parts() {
        let pg = ("DATABASE_URL", "postgres://u@h/d");
        let c = cfg(&[pg, ("REALTIME_REDIS_HOST", "cache"), ("REALTIME_REDIS_PASSWORD", "p@ss")]).unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis://:p%40ss@cache:6379/0"));
        assert_eq!(c.redis_prefix, "nself-realtime");
        assert_eq!(c.node_timeout, Duration::from_secs(10));
        let c = cfg(&[pg, ("REALTIME_REDIS_URL", "redis://r:1/2"), ("REALTIME_REDIS_HOST", "cache")]).unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis://r:1/2"));
        let c =
            cfg(&[pg, ("REALTIME_REDIS_HOST", "cache"), ("REALTIME_REDIS_DB", "3"), ("REALTIME_REDIS_PORT", "7000")])
                .unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis://cache:7000/3"));
        assert!(cfg(&[pg]).unwrap().redis_url.is_none());
    }

    #[test]
    fn redis_with_sqlite_is_refused_with_the_fix() {
        let err = cfg(&[("REALTIME_REDIS_HOST", "cache")]).unwrap_err().to_string();
        assert!(err.contains("SQLite") && err.contains("DATABASE_URL") && err.contains("single node"), "{err}");
        let err = cfg(&[("REALTIME_REDIS_URL", "redis://x"), ("DATABASE_URL", "sqlite://x.db")]).unwrap_err();
        assert!(err.to_string().contains("PostgreSQL"), "{err}");
    }

    #[test]
    fn missing_secret_is_explained() {
        let c = cfg(&[]).unwrap();
        let msg = c.auth_problem().unwrap();
        assert!(msg.contains("REALTIME_JWT_SECRET") && msg.contains("REALTIME_ALLOW_DEV_TOKENS=true"));
        assert!(cfg(&[("REALTIME_JWT_SECRET", "s")]).unwrap().auth_problem().is_none());
    }

    #[test]
    fn admin_ui_needs_a_password_and_named_origins() {
        let err = cfg(&[("REALTIME_ADMIN_UI", "true")]).unwrap_err().to_string();
        assert!(err.contains("REALTIME_ADMIN_PASSWORD"), "{err}");
        let c = cfg(&[("REALTIME_ADMIN_UI", "true"), ("REALTIME_API_KEY", "k")]).unwrap();
        assert_eq!((c.admin_user.as_str(), c.admin_secret()), ("admin", Some("k")));
        assert_eq!(c.admin_ui_origins, vec!["https://admin.socket.io".to_string()]);
        let c = cfg(&[("REALTIME_ADMIN_PASSWORD", "p"), ("REALTIME_API_KEY", "k")]).unwrap();
        assert_eq!(c.admin_secret(), Some("p"));
        let err = cfg(&[("REALTIME_ADMIN_UI_ORIGINS", "*")]).unwrap_err().to_string();
        assert!(err.contains("REALTIME_ADMIN_UI_ORIGINS"), "{err}");
    }

    #[test]
    fn describe_masks_secrets() {
        let d = describe(&|n| match n {
            "REALTIME_JWT_SECRET" => Some("supersecret".into()),
            "DATABASE_URL" => Some("postgres://me:pw@host/db".into()),
            _ => None,
        });
        let get = |n: &str| d.iter().find(|(k, _, _)| *k == n).unwrap().1.clone();
        assert!(!get("REALTIME_JWT_SECRET").contains("supersecret"));
        assert_eq!(get("DATABASE_URL"), "postgres://me:****@host/db");
    }

    /// `.env.example` is the user's reference: it must list exactly the variables the code reads.
    #[test]
    fn env_example_lists_every_variable() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example")).unwrap();
        let listed: Vec<&str> = text
            .lines()
            .map(|l| l.trim_start_matches('#').trim())
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
            .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit()))
            .collect();
        for var in VARS {
            assert!(listed.contains(&var.name), ".env.example lacks {}", var.name);
        }
        for name in &listed {
            assert!(VARS.iter().any(|v| v.name == *name), ".env.example lists {name}, which the server does not read");
        }
    }
}
