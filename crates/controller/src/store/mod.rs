//! The record of runs: embedded SQLite by default (a file, no server), PostgreSQL when a
//! `postgres://` URL is given. One schema, applied by sqlx migrations, in SQL both accept.
//!
//! Writes go through a [`StoreWriter`]: a background task that takes whatever rows have
//! queued up and writes them in one transaction, so the store never holds up wiring.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

mod flows;
pub mod listen;
mod metrics;
mod results;
pub use results::{FlowPoint, LinkPoint, RunRow};
mod routes;
mod writer;

pub use writer::StoreWriter;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not open the store at {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("could not apply the store's schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store: {0}")]
    Query(#[from] sqlx::Error),
    #[error("store: {0}")]
    Io(std::io::Error),
}

/// How a run stands, as the `runs` table records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Wiring,
    Ready,
    /// It ended before it was ready (an agent failed).
    Failed,
    /// Ctrl-C before it was ready.
    Interrupted,
    /// Torn down after it was ready.
    Down,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Wiring => "wiring",
            RunState::Ready => "ready",
            RunState::Failed => "failed",
            RunState::Interrupted => "interrupted",
            RunState::Down => "down",
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    url: String,
    /// The URL as given (with its password): a PostgreSQL listener opens its own connection.
    connect_url: String,
    postgres: bool,
}

/// A run's row, as written when it starts.
#[derive(Debug, Clone)]
pub struct RunStart {
    pub topology: String,
    pub nodes: u32,
    pub links: usize,
}

/// What a run looked like when it was ready.
#[derive(Debug, Clone, Default)]
pub struct RunFigures {
    pub plumb_seconds: Option<f64>,
    pub wiring_seconds: Option<f64>,
    pub mem_per_node_bytes: Option<u64>,
    pub failed_nodes: u32,
}

/// Hides the password of a URL for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Store {
    /// Opens (creating if needed) and migrates. `sqlite://path` or `postgres://…`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url = if sqlite && !url.contains("mode=") {
            format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
        } else {
            url.to_owned()
        };
        let pool = AnyPoolOptions::new()
            // SQLite takes one writer at a time.
            .max_connections(if sqlite { 1 } else { 4 })
            .connect(&url)
            .await
            .map_err(|source| StoreError::Open {
                url: redact(&url),
                source,
            })?;
        // One schema in each backend's own SQL (PostgreSQL also gets its notify triggers).
        if sqlite {
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        } else {
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        }
        Ok(Store {
            pool,
            // As given: the mode added for SQLite is ours.
            url: redact(
                url.trim_end_matches("?mode=rwc")
                    .trim_end_matches("&mode=rwc"),
            ),
            connect_url: url,
            postgres: !sqlite,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this is PostgreSQL (which announces scripts' inserts).
    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    /// Starts a run: clears the previous run's nodes and links, records the new run.
    pub async fn begin_run(&self, run: &RunStart) -> Result<i64, StoreError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let id = now.as_millis() as i64;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM nodes").execute(&mut *tx).await?;
        sqlx::query("DELETE FROM links").execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO runs (id, started_at, topology, nodes, links, state) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(now.as_secs().to_string())
        .bind(run.topology.clone())
        .bind(i64::from(run.nodes))
        .bind(run.links as i64)
        .bind(RunState::Wiring.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn finish_run(
        &self,
        run: i64,
        state: RunState,
        figures: &RunFigures,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE runs SET state = $1, plumb_seconds = $2, wiring_seconds = $3, mem_per_node_bytes = $4, failed_nodes = $5 WHERE id = $6",
        )
        .bind(state.as_str())
        .bind(figures.plumb_seconds)
        .bind(figures.wiring_seconds)
        .bind(figures.mem_per_node_bytes.map(|b| b as i64))
        .bind(i64::from(figures.failed_nodes))
        .bind(run)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn count(&self, table: Table) -> Result<i64, StoreError> {
        let sql = match table {
            Table::Nodes => "SELECT COUNT(*) FROM nodes",
            Table::Links => "SELECT COUNT(*) FROM links",
            Table::Runs => "SELECT COUNT(*) FROM runs",
        };
        let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&self.pool).await?;
        Ok(n)
    }

    /// Links recorded up in the current run.
    pub async fn links_up(&self) -> Result<i64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM links WHERE up = $1")
            .bind(true)
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    /// The current run's links as recorded: (a, b, up), sorted.
    pub async fn link_rows(&self) -> Result<Vec<(u32, u32, bool)>, StoreError> {
        // Any can't decode SQLite's booleans: read them as numbers in both dialects.
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT a, b, CAST(CASE WHEN up THEN 1 ELSE 0 END AS BIGINT) FROM links ORDER BY a, b",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(a, b, up)| (a as u32, b as u32, up != 0))
            .collect())
    }

    /// A writer for this run's rows (nodes, links, flows, metrics), in the background.
    pub fn writer(&self, run: i64, overlay_base: std::net::Ipv4Addr) -> StoreWriter {
        StoreWriter::start(self.pool.clone(), self.postgres, run, overlay_base)
    }

    pub async fn close(self) {
        self.pool.close().await;
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Table {
    Nodes,
    Links,
    Runs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://pgusr:pgpwrd@172.16.8.2:5432/nextmini"),
            "postgres://pgusr:***@172.16.8.2:5432/nextmini"
        );
        assert_eq!(redact("sqlite:///var/lib/x.db"), "sqlite:///var/lib/x.db");
    }
}
