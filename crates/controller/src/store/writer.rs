//! The background writer: whatever rows have queued up are written in one transaction, so the
//! store never holds up the run.

use sqlx::AnyPool;
use tokio::sync::mpsc;

use super::StoreError;
use crate::coordinator::{Milestone, NodeState};
use crate::flows::FlowRow;

/// Queues rows for the background writer.
pub struct StoreWriter {
    tx: mpsc::UnboundedSender<Row>,
    task: tokio::task::JoinHandle<Result<(), StoreError>>,
}

#[derive(Debug)]
enum Row {
    Node {
        id: u32,
        underlay: Option<String>,
        state: NodeState,
    },
    Link {
        a: u32,
        b: u32,
        up: bool,
    },
    Flow(Box<FlowRow>),
    Metrics(Box<crate::metrics::MetricsReport>),
}

impl StoreWriter {
    pub(super) fn start(
        pool: AnyPool,
        postgres: bool,
        run: i64,
        overlay_base: std::net::Ipv4Addr,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(write_batches(pool, postgres, run, overlay_base, rx));
        StoreWriter { tx, task }
    }

    /// Records what a milestone changes, if anything.
    pub fn record(&self, m: &Milestone) {
        let row = match m {
            Milestone::NodeConnected {
                node,
                underlay_addr,
                ..
            } => Row::Node {
                id: *node,
                underlay: Some(underlay_addr.to_string()),
                state: NodeState::Connected,
            },
            Milestone::NodeReady { node, .. } => Row::Node {
                id: *node,
                underlay: None,
                state: NodeState::Ready,
            },
            Milestone::NodeFailed { node, .. } => Row::Node {
                id: *node,
                underlay: None,
                state: NodeState::Failed,
            },
            Milestone::LinkUp { a, b, .. } => Row::Link {
                a: *a,
                b: *b,
                up: true,
            },
            Milestone::LinkDown { a, b } => Row::Link {
                a: *a,
                b: *b,
                up: false,
            },
            Milestone::Flow(f) => Row::Flow(f.clone()),
            Milestone::Metrics(r) => Row::Metrics(r.clone()),
            _ => return,
        };
        let _ = self.tx.send(row);
    }

    /// Writes what is queued and stops.
    pub async fn close(self) -> Result<(), StoreError> {
        drop(self.tx);
        self.task
            .await
            .unwrap_or_else(|e| Err(StoreError::Query(sqlx::Error::Protocol(e.to_string()))))
    }
}

/// Rows taken together into one transaction (a report of a node is one row).
const BATCH: usize = 4096;

async fn write_batches(
    pool: AnyPool,
    postgres: bool,
    run: i64,
    overlay_base: std::net::Ipv4Addr,
    mut rx: mpsc::UnboundedReceiver<Row>,
) -> Result<(), StoreError> {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        // A batch the store refuses is lost, not the run: say so and go on.
        let rows = batch.len();
        if let Err(e) = write_batch(&pool, postgres, run, overlay_base, &mut batch).await {
            tracing::error!("store: {rows} rows not written: {e}");
        }
        batch.clear();
    }
    Ok(())
}

async fn write_batch(
    pool: &AnyPool,
    postgres: bool,
    run: i64,
    overlay_base: std::net::Ipv4Addr,
    batch: &mut Vec<Row>,
) -> Result<(), StoreError> {
    {
        let mut tx = pool.begin().await?;
        let mut reports = Vec::new();
        for row in batch.drain(..) {
            match row {
                Row::Node {
                    id,
                    underlay,
                    state,
                } => {
                    sqlx::query(
                        "INSERT INTO nodes (id, run_id, underlay_addr, overlay_addr, state) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (id) DO UPDATE SET state = excluded.state, underlay_addr = COALESCE(excluded.underlay_addr, nodes.underlay_addr), run_id = excluded.run_id",
                    )
                    .bind(i64::from(id))
                    .bind(run)
                    .bind(underlay)
                    .bind(proto::overlay_addr(overlay_base, id).to_string())
                    .bind(state.as_str())
                    .execute(&mut *tx)
                    .await?;
                }
                Row::Link { a, b, up } => {
                    sqlx::query(
                        "INSERT INTO links (a, b, run_id, up) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (a, b) DO UPDATE SET up = excluded.up, run_id = excluded.run_id",
                    )
                    .bind(i64::from(a))
                    .bind(i64::from(b))
                    .bind(run)
                    .bind(up)
                    .execute(&mut *tx)
                    .await?;
                }
                Row::Flow(f) => super::flows::update(&mut tx, &f).await?,
                Row::Metrics(r) => reports.push(r),
            }
        }
        super::metrics::write(&mut tx, postgres, run, &reports).await?;
        tx.commit().await?;
    }
    Ok(())
}
