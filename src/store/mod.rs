//! Persistence: PostgreSQL or an embedded SQLite file, through one set of portable queries (sqlx `Any`).
//!
//! Times are epoch milliseconds, flags 0/1 and JSON text, so every query runs unchanged on both databases;
//! migrations are kept per dialect under `schema/`. Message writes go through [`writer::MessageWriter`], which
//! batches them into transactions; everything else is a plain query.

pub mod arrivals;
pub mod connections;
pub mod events;
pub mod ledger;
pub mod messages;
pub mod presence;
pub mod receipts;
pub mod rooms;
pub mod writer;

use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{MigrateDatabase, Migrator};

use crate::config::Database;

pub use messages::{MessageRow, NewMessage, SyncPage};
pub use rooms::{MemberRow, RoomRow};

static PG_MIGRATIONS: Migrator = sqlx::migrate!("schema/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("schema/sqlite");

/// The tables the migrations create (plugin.json's `tables` is compared with this list by a test).
pub const TABLES: &[&str] = &[
    "np_realtime_rooms",
    "np_realtime_room_members",
    "np_realtime_messages",
    "np_realtime_connections",
    "np_realtime_events",
    "np_realtime_presence",
    "np_realtime_contacts",
    "np_realtime_reactions",
    "np_realtime_deliveries",
];

#[derive(Clone)]
pub struct Store {
    pub pool: AnyPool,
    dialect: &'static str,
    /// Where the pool connects; [`Store::dedicated`] opens more connections there.
    url: Arc<str>,
}

/// The settings of every pool of the store; the caller sets its size.
fn pool_options(sqlite: bool) -> AnyPoolOptions {
    AnyPoolOptions::new()
        // A PostgreSQL server that does not answer in 5 s is unavailable. A SQLite connection is a thread of this
        // process: waiting for one is queueing behind this process's own statements (thousands of room joins in
        // a ramp, each holding one for its write), never an outage, so a wait fails only after much longer.
        .acquire_timeout(Duration::from_secs(if sqlite { 30 } else { 5 }))
        .acquire_slow_threshold(Duration::from_secs(if sqlite { 10 } else { 2 }))
        // A PostgreSQL connection can die with its server or the network, so it is pinged before each use.
        // A SQLite connection is a thread of this process: the ping was a round trip to that thread before
        // every statement (two per handshake, two per ledger batch) that could never find it gone.
        .test_before_acquire(!sqlite)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if sqlite {
                    // WAL lets readers run beside the writer; busy_timeout absorbs writer contention.
                    // An 8 MiB page cache (SQLite's default is 2 MiB) keeps the hot indexes in memory.
                    sqlx::raw_sql(
                        "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON; \
                         PRAGMA cache_size=-8192; PRAGMA temp_store=MEMORY;",
                    )
                    .execute(conn)
                    .await?;
                }
                Ok(())
            })
        })
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Microseconds since the epoch.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

pub(crate) fn flag(b: bool) -> i64 {
    b as i64
}

/// The SQLite file (messages, who talked to whom) is readable by the server's user only: created 0600 when
/// missing, narrowed to 0600 when it is wider; SQLite gives its `-wal` and `-shm` files the main file's mode.
fn private_files(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let open = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path);
    open.map_err(|e| {
        anyhow::anyhow!("cannot create the database file {} ({e}); set REALTIME_DATA_DIR", path.display())
    })?;
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        if let Ok(meta) = std::fs::metadata(&file)
            && meta.permissions().mode() & 0o077 != 0
        {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| anyhow::anyhow!("cannot make {} private (chmod 600: {e})", file.display()))?;
        }
    }
    Ok(())
}

impl Store {
    /// Connects, creating the SQLite file (and its directory) or the PostgreSQL database when missing, and
    /// runs the migrations.
    pub async fn open(db: &Database) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let url = db.url();
        match db {
            Database::Sqlite { path } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
                    && !dir.exists()
                {
                    // A directory made here is the server's own: only its user may enter it.
                    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| {
                        anyhow::anyhow!(
                            "cannot create the data directory {} ({e}); set REALTIME_DATA_DIR",
                            dir.display()
                        )
                    })?;
                }
                private_files(path)?;
            }
            Database::Postgres { .. } => {
                let exists = sqlx::Postgres::database_exists(&url).await.map_err(|e| {
                    anyhow::anyhow!(
                        "cannot reach PostgreSQL at {} ({e}); check DATABASE_URL or POSTGRES_*",
                        redact(&url)
                    )
                })?;
                if !exists {
                    tracing::info!(url = %redact(&url), "creating database");
                    sqlx::Postgres::create_database(&url).await?;
                }
            }
        }
        let sqlite = matches!(db, Database::Sqlite { .. });
        let pool = pool_options(sqlite)
            .max_connections(if sqlite { 4 } else { 16 })
            .min_connections(1)
            .connect(&url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the database {} ({e})", redact(&url)))?;
        let store = Store { pool, dialect: db.dialect(), url: url.into() };
        store.migrate().await?;
        Ok(store)
    }

    /// The same database on a pool of its own of at most `connections`, opened on first use: its connections
    /// and their timers belong to the runtime that uses them first (the message writer's thread), so nothing
    /// of it waits for the main runtime's workers.
    pub fn dedicated(&self, connections: u32) -> Result<Store, sqlx::Error> {
        let sqlite = self.dialect == "sqlite";
        let pool = pool_options(sqlite).max_connections(connections).min_connections(0).connect_lazy(&self.url)?;
        Ok(Store { pool, dialect: self.dialect, url: self.url.clone() })
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = if self.dialect == "postgres" { &PG_MIGRATIONS } else { &SQLITE_MIGRATIONS };
        migrator.run(&self.pool).await.map_err(|e| anyhow::anyhow!("database migration failed: {e}"))?;
        Ok(())
    }

    /// A write transaction. On SQLite it takes the write lock up front (BEGIN IMMEDIATE): a deferred
    /// transaction that reads first and writes later fails with "database is locked" when another writer
    /// committed in between, instead of waiting its turn.
    ///
    /// A COMMIT that SQLite refused (`SQLITE_FULL`: the disk is full) leaves its connection inside the
    /// transaction, and the pool takes it back so: every later BEGIN on it failed ("begin_with at non-zero
    /// transaction depth"), long after space was freed. Such a connection is rolled back here before use, or
    /// closed when that fails too.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        use sqlx::Connection;
        if self.dialect != "sqlite" {
            return self.pool.begin().await;
        }
        let mut attempts = 0;
        loop {
            let mut conn = self.pool.acquire().await?;
            if conn.is_in_transaction() {
                attempts += 1;
                match sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await {
                    Ok(_) => tracing::warn!("a database connection was left inside a failed transaction; rolled back"),
                    Err(e) if attempts < 8 => {
                        tracing::warn!(error = %e, "a database connection left inside a failed transaction is closed");
                        conn.close_on_drop();
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            return sqlx::Transaction::begin(conn, Some(sqlx::SqlSafeStr::into_sql_str("BEGIN IMMEDIATE"))).await;
        }
    }

    pub fn dialect(&self) -> &'static str {
        self.dialect
    }

    /// A round trip to the database, for `/health` and the watchdog.
    pub async fn ping(&self) -> Result<Duration, sqlx::Error> {
        let t = Instant::now();
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(t.elapsed())
    }

    /// Drops every table of the plugin (uninstall with purge).
    pub async fn purge(&self) -> anyhow::Result<()> {
        for t in TABLES.iter().rev() {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {t}"))).execute(&self.pool).await?;
        }
        sqlx::raw_sql("DROP TABLE IF EXISTS _sqlx_migrations").execute(&self.pool).await?;
        Ok(())
    }

    /// Deletes what is past its retention. Returns (messages, events) removed.
    pub async fn prune(&self, message_days: u32, event_days: u32) -> Result<(u64, u64), sqlx::Error> {
        let day = 86_400_000i64;
        let mut removed = (0, 0);
        if message_days > 0 {
            let cutoff = now_ms() - message_days as i64 * day;
            // In chunks, each its own short transaction: a first purge of a large backlog must not hold the
            // write lock for longer than a message insert waits (SQLite's busy timeout).
            const CHUNK: &str =
                "SELECT id FROM np_realtime_messages WHERE created_at < $1 ORDER BY created_at, id LIMIT 1000";
            loop {
                let mut tx = self.begin_write().await?;
                for table in ["np_realtime_deliveries", "np_realtime_reactions"] {
                    let sql = format!("DELETE FROM {table} WHERE message_id IN ({CHUNK})");
                    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(cutoff).execute(&mut *tx).await?;
                }
                let sql = format!("DELETE FROM np_realtime_messages WHERE id IN ({CHUNK})");
                let n = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(cutoff).execute(&mut *tx).await?.rows_affected();
                tx.commit().await?;
                removed.0 += n;
                if n < 1000 {
                    break;
                }
            }
        }
        if event_days > 0 {
            let cutoff = now_ms() - event_days as i64 * day;
            removed.1 = sqlx::query("DELETE FROM np_realtime_events WHERE created_at < $1")
                .bind(cutoff)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(removed)
    }
}

/// A database URL with its password hidden, for messages.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((creds, host)) = rest.split_once('@')
    {
        let user = creds.split(':').next().unwrap_or("");
        return format!("{scheme}://{user}@{host}");
    }
    url.to_string()
}

#[cfg(test)]
mod file_mode_tests {
    use std::os::unix::fs::PermissionsExt;

    use super::Store;
    use crate::config::Database;

    fn mode(p: &std::path::Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn the_sqlite_file_and_a_data_dir_made_for_it_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let path = dir.join("realtime.db");
        let store = Store::open(&Database::Sqlite { path: path.clone() }).await.unwrap();
        sqlx::query("SELECT 1").execute(&store.pool).await.unwrap();
        assert_eq!(mode(&dir), 0o700, "a data directory the server makes");
        assert_eq!(mode(&path), 0o600, "the database file");
        let wal = dir.join("realtime.db-wal");
        if wal.exists() {
            assert_eq!(mode(&wal), 0o600, "the WAL file");
        }
        store.pool.close().await;

        // a file left world-readable (an older version, a restore) is narrowed at the next start
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = Store::open(&Database::Sqlite { path: path.clone() }).await.unwrap();
        assert_eq!(mode(&path), 0o600);
        store.pool.close().await;
    }
}
