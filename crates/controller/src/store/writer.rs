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
    /// A group changed, at this Unix time (ns).
    Group(Box<crate::coordinator::GroupEvent>, i64),
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
            Milestone::Group(g) => Row::Group(
                g.clone(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as i64),
            ),
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
                Row::Group(g, time_ns) => {
                    let cast = |n: usize| {
                        if postgres {
                            format!("CAST(${n} AS JSONB)")
                        } else {
                            format!("${n}")
                        }
                    };
                    sqlx::query(&format!(
                        "INSERT INTO group_events (run_id, time_ns, group_addr, source_node_id, event, nodes, members, trees) \
                         VALUES ($1, $2, $3, $4, $5, {}, {}, {})",
                        cast(6),
                        cast(7),
                        cast(8)
                    ))
                    .bind(run)
                    .bind(time_ns)
                    .bind(g.row.group.to_string())
                    .bind(i64::from(g.row.source))
                    .bind(g.kind.as_str())
                    .bind(serde_json::to_string(&g.nodes).expect("ids encode"))
                    .bind(serde_json::to_string(&g.row.members).expect("ids encode"))
                    .bind(serde_json::to_string(&g.row.trees).expect("trees encode"))
                    .persistent(false)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        super::metrics::write(&mut tx, postgres, run, &reports).await?;
        tx.commit().await?;
    }
    Ok(())
}
