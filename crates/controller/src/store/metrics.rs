//! Monitoring rows: `link_metrics` (each link direction per interval), the seeds' `metrics`
//! (bytes of a flow over a link direction per interval) and `app_flows`. Rows of many reports
//! go in together: one multi-row INSERT per table and batch.

use sqlx::{Any, Transaction};

use super::StoreError;
use crate::metrics::{AppFlowRow, MetricsReport};

/// A value of a row, as the Any driver binds it.
#[derive(Debug, Clone)]
enum Value {
    Int(i64),
    MaybeInt(Option<i64>),
    Float(Option<f64>),
    Blob(Vec<u8>),
    Text(Option<String>),
}

/// Rows per INSERT: well under both backends' limits on parameters.
const ROWS_PER_INSERT: usize = 400;

async fn insert_rows(
    tx: &mut Transaction<'_, Any>,
    postgres: bool,
    table: &str,
    columns: &[&str],
    rows: &[Vec<Value>],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
        let mut n = 0;
        for (i, _) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 0..columns.len() {
                if c > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                // SQLite looks a numbered parameter's name up by walking them all: with
                // thousands in a statement, anonymous ones keep binding linear.
                if postgres {
                    sql.push_str(&format!("${n}"));
                } else {
                    sql.push('?');
                }
            }
            sql.push(')');
        }
        let mut q = sqlx::query(&sql);
        for row in chunk {
            for v in row {
                q = match v {
                    Value::Int(i) => q.bind(*i),
                    Value::MaybeInt(i) => q.bind(*i),
                    Value::Float(f) => q.bind(*f),
                    Value::Blob(b) => q.bind(b.clone()),
                    Value::Text(t) => q.bind(t.clone()),
                };
            }
        }
        // Full chunks share one statement, prepared once per connection; on PostgreSQL a
        // NULL's declared type could differ from a later value's, so it prepares each time.
        q.persistent(!postgres && chunk.len() == ROWS_PER_INSERT)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Writes what a batch of reports adds.
pub(super) async fn write(
    tx: &mut Transaction<'_, Any>,
    postgres: bool,
    run: i64,
    reports: &[Box<MetricsReport>],
) -> Result<(), StoreError> {
    use Value::{Blob, Float, Int, MaybeInt, Text};
    let mut links = Vec::new();
    let mut flows = Vec::new();
    let mut opened = Vec::new();
    let mut closed = Vec::new();
    for r in reports {
        let t = r.time_ns as i64;
        for l in &r.links {
            links.push(vec![
                Int(run),
                Int(t),
                Int(i64::from(l.src)),
                Int(i64::from(l.dst)),
                Int(l.bytes as i64),
                Int(l.packets as i64),
                Int(l.dropped_down as i64),
                Int(l.dropped_loss as i64),
                Int(l.dropped_queue as i64),
                Int(l.dropped_red as i64),
                Int(l.queue_packets as i64),
                Float(l.utilization),
            ]);
        }
        for f in &r.flows {
            flows.push(vec![
                Int(run),
                Blob(f.key.id().to_be_bytes().to_vec()),
                MaybeInt(f.flow.map(|id| id as i64)),
                Int(i64::from(f.local)),
                Int(i64::from(f.remote)),
                Int(f.bytes as i64),
                Int(f.packets as i64),
                Int(t),
            ]);
        }
        for a in &r.apps {
            match a {
                AppFlowRow::Started {
                    key,
                    src,
                    dst,
                    at_ns,
                    route,
                } => opened.push(vec![
                    Int(run),
                    Blob(key.id().to_be_bytes().to_vec()),
                    Int(i64::from(*src)),
                    Int(i64::from(*dst)),
                    Int(i64::from(key.protocol)),
                    Int(i64::from(key.sport)),
                    Int(i64::from(key.dport)),
                    Text(route.clone()),
                    Int(*at_ns as i64),
                ]),
                AppFlowRow::Finished { key, at_ns, bytes } => {
                    closed.push((key.id().to_be_bytes().to_vec(), *at_ns, *bytes))
                }
            }
        }
    }
    insert_rows(
        tx,
        postgres,
        "link_metrics",
        &[
            "run_id",
            "time_ns",
            "src",
            "dst",
            "bytes",
            "packets",
            "dropped_down",
            "dropped_loss",
            "dropped_queue",
            "dropped_red",
            "queue_packets",
            "utilization",
        ],
        &links,
    )
    .await?;
    insert_rows(
        tx,
        postgres,
        "metrics",
        &[
            "run_id",
            "flow_id",
            "flow",
            "local_node_id",
            "remote_node_id",
            "bytes",
            "packets",
            "time_ns",
        ],
        &flows,
    )
    .await?;
    insert_rows(
        tx,
        postgres,
        "app_flows",
        &[
            "run_id", "flow_id", "src", "dst", "protocol", "src_port", "dst_port", "route",
            "start_ns",
        ],
        &opened,
    )
    .await?;
    for (id, at, bytes) in closed {
        sqlx::query(
            "UPDATE app_flows SET is_finished = $1, finish_ns = $2, bytes = $3 WHERE run_id = $4 AND flow_id = $5 AND is_finished = $6",
        )
        .bind(true)
        .bind(at as i64)
        .bind(bytes as i64)
        .bind(run)
        .bind(id)
        .bind(false)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
