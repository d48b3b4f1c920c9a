//! Reading a run's results back, during the run or long after it: its flows, the time series
//! of its links and flows, and every table as CSV for analysis elsewhere.

use std::path::Path;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError};
use crate::flows::{FlowRow, FlowState};

/// A run as the `runs` table has it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunRow {
    pub id: i64,
    /// Unix time, seconds.
    pub started_at: String,
    pub topology: String,
    pub nodes: i64,
    pub state: String,
}

/// One link direction over one interval, as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LinkPoint {
    pub time_ns: i64,
    pub src: u32,
    pub dst: u32,
    pub bytes: i64,
    pub packets: i64,
    pub dropped: i64,
    pub queue_packets: i64,
    pub utilization: Option<f64>,
}

/// One flow's bytes over one link direction in one interval, as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FlowPoint {
    pub time_ns: i64,
    pub local: u32,
    pub remote: u32,
    pub bytes: i64,
    pub packets: i64,
}

/// The tables `export` writes, with the columns that belong to one run.
const EXPORTED: &[&str] = &[
    "flows",
    "link_metrics",
    "metrics",
    "app_flows",
    "routes",
    "group_events",
];

impl Store {
    pub async fn runs(&self) -> Result<Vec<RunRow>, StoreError> {
        let rows: Vec<(i64, String, String, i64, String)> =
            sqlx::query_as("SELECT id, started_at, topology, nodes, state FROM runs ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(id, started_at, topology, nodes, state)| RunRow {
                id,
                started_at,
                topology,
                nodes,
                state,
            })
            .collect())
    }

    /// A run's generated flows and what was measured of them.
    pub async fn flow_results(&self, run: i64) -> Result<Vec<FlowRow>, StoreError> {
        let rows: Vec<AnyRow> = sqlx::query(
            "SELECT id, src_node_id, dst_node_id, flow_len_type, flow_len_bytes, flow_len_duration, flow_rate, flow_weight, transport, cc, start_offset, \
             state, local_port, start_ns, finish_ns, fct_seconds, bytes, throughput_bps, retransmits, srtt_us, cwnd, failure \
             FROM flows WHERE run_id = $1 ORDER BY id",
        )
        .bind(run)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(flow_row).collect()
    }

    /// Link samples of `run` (of one link, both directions, if given) from `since_ns` on.
    pub async fn link_points(
        &self,
        run: i64,
        link: Option<(u32, u32)>,
        since_ns: i64,
    ) -> Result<Vec<LinkPoint>, StoreError> {
        let (a, b) = link.map_or((-1, -1), |(a, b)| (i64::from(a), i64::from(b)));
        type Sample = (i64, i64, i64, i64, i64, i64, i64, Option<f64>);
        let rows: Vec<Sample> = sqlx::query_as(
            "SELECT time_ns, src, dst, bytes, packets, dropped_down + dropped_loss + dropped_queue + dropped_red, queue_packets, utilization \
             FROM link_metrics WHERE run_id = $1 AND time_ns >= $2 \
             AND ($3 < 0 OR (src = $3 AND dst = $4) OR (src = $4 AND dst = $3)) ORDER BY time_ns, src, dst",
        )
        .bind(run)
        .bind(since_ns)
        .bind(a)
        .bind(b)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(time_ns, src, dst, bytes, packets, dropped, queue_packets, utilization)| {
                    LinkPoint {
                        time_ns,
                        src: src as u32,
                        dst: dst as u32,
                        bytes,
                        packets,
                        dropped,
                        queue_packets,
                        utilization,
                    }
                },
            )
            .collect())
    }

    /// A generated flow's samples on every link direction it crossed, from `since_ns` on.
    pub async fn flow_points(
        &self,
        run: i64,
        flow: u64,
        since_ns: i64,
    ) -> Result<Vec<FlowPoint>, StoreError> {
        let rows: Vec<(i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT time_ns, local_node_id, remote_node_id, bytes, packets FROM metrics \
             WHERE run_id = $1 AND flow = $2 AND time_ns >= $3 ORDER BY time_ns, local_node_id",
        )
        .bind(run)
        .bind(flow as i64)
        .bind(since_ns)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(time_ns, local, remote, bytes, packets)| FlowPoint {
                time_ns,
                local: local as u32,
                remote: remote as u32,
                bytes,
                packets,
            })
            .collect())
    }

    /// The latest sample time of a run (links or flows), if any.
    pub async fn last_sample_ns(&self, run: i64) -> Result<Option<i64>, StoreError> {
        let (t,): (Option<i64>,) =
            sqlx::query_as("SELECT MAX(time_ns) FROM link_metrics WHERE run_id = $1")
                .bind(run)
                .fetch_one(&self.pool)
                .await?;
        Ok(t)
    }

    /// Writes each of a run's tables as `DIR/<table>.csv` (a header, then a row per line);
    /// returns the files and their row counts.
    pub async fn export_csv(
        &self,
        run: i64,
        dir: &Path,
    ) -> Result<Vec<(String, usize)>, StoreError> {
        std::fs::create_dir_all(dir).map_err(StoreError::Io)?;
        let mut written = Vec::new();
        for table in EXPORTED {
            let columns = self.columns(table).await?;
            // Every column as text (blobs as hex), so one reader serves both backends.
            let select: Vec<String> = columns
                .iter()
                .map(|(name, blob)| match (blob, self.postgres) {
                    (true, true) => format!("encode({name}, 'hex')"),
                    (true, false) => format!("lower(hex({name}))"),
                    (false, _) => format!("CAST({name} AS TEXT)"),
                })
                .collect();
            let order = if *table == "routes" {
                "route_id"
            } else if columns.iter().any(|(c, _)| c == "id") {
                "id"
            } else {
                "time_ns"
            };
            let sql = format!(
                "SELECT {} FROM {table} WHERE run_id = $1 ORDER BY {order}",
                select.join(", ")
            );
            let rows = sqlx::query(&sql).bind(run).fetch_all(&self.pool).await?;
            let path = dir.join(format!("{table}.csv"));
            let mut out = csv::Writer::from_path(&path).map_err(csv_error)?;
            out.write_record(columns.iter().map(|(c, _)| c.as_str()))
                .map_err(csv_error)?;
            for r in &rows {
                let fields: Vec<String> = (0..columns.len())
                    .map(|i| {
                        r.try_get::<Option<String>, _>(i)
                            .map(Option::unwrap_or_default)
                    })
                    .collect::<Result<_, _>>()?;
                out.write_record(&fields).map_err(csv_error)?;
            }
            out.flush().map_err(StoreError::Io)?;
            written.push((format!("{table}.csv"), rows.len()));
        }
        Ok(written)
    }

    /// A table's stored columns (generated ones left out) and whether each holds bytes.
    async fn columns(&self, table: &str) -> Result<Vec<(String, bool)>, StoreError> {
        if self.postgres {
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_name = $1 AND is_generated = 'NEVER' ORDER BY ordinal_position",
            )
            .bind(table)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(|(c, t)| (c, t == "bytea")).collect())
        } else {
            // table_xinfo lists generated columns too (hidden = 2 or 3).
            let rows: Vec<(String, String, i64)> = sqlx::query_as(&format!(
                "SELECT name, type, hidden FROM pragma_table_xinfo('{table}') ORDER BY cid"
            ))
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .filter(|(_, _, hidden)| *hidden == 0)
                .map(|(c, t, _)| (c, t.eq_ignore_ascii_case("blob")))
                .collect())
        }
    }
}

fn csv_error(e: csv::Error) -> StoreError {
    StoreError::Io(std::io::Error::other(e))
}

fn flow_row(r: &AnyRow) -> Result<FlowRow, StoreError> {
    let stored = super::flows::stored_flow(r)?;
    let state = match r.try_get::<String, _>("state")?.as_str() {
        "finished" => FlowState::Finished,
        "failed" => FlowState::Failed,
        "running" => FlowState::Running,
        "starting" => FlowState::Starting,
        "waiting" => FlowState::Waiting,
        _ => FlowState::Scheduled,
    };
    let int =
        |name: &str| -> Result<Option<i64>, StoreError> { Ok(r.try_get::<Option<i64>, _>(name)?) };
    let tcp = match (int("retransmits")?, int("srtt_us")?, int("cwnd")?) {
        (Some(retransmits), Some(srtt), Some(cwnd)) => Some(proto::TcpStats {
            retransmits: retransmits as u64,
            srtt_us: srtt as u32,
            cwnd: cwnd as u32,
        }),
        _ => None,
    };
    Ok(FlowRow {
        id: stored.id,
        src: stored.src,
        dst: stored.dst,
        spec: stored.spec,
        start_offset: stored.start.as_secs_f64(),
        state,
        local_port: int("local_port")?.map(|p| p as u16),
        start_ns: int("start_ns")?.map(|v| v as u64),
        finish_ns: int("finish_ns")?.map(|v| v as u64),
        bytes: int("bytes")?.map(|v| v as u64),
        fct_seconds: r.try_get("fct_seconds")?,
        throughput_bps: r.try_get("throughput_bps")?,
        tcp,
        failure: r.try_get("failure")?,
    })
}
