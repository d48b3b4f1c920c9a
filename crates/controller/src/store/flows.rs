//! Flows in the store: the seeds' `flows` table, one row a flow. A flow's id is its row's: the
//! controller inserts flows it is given (the experiment file, the API) and takes the id; a
//! control script may insert rows itself (PostgreSQL announces them), which a run claims.

use std::time::Duration;

use proto::{FlowLen, FlowSpec, FlowTransport};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Store, StoreError};
use crate::flows::FlowRow;

/// A flow as a script writes it into the store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFlow {
    pub id: u64,
    pub src: u32,
    pub dst: u32,
    pub spec: FlowSpec,
    pub start: Duration,
}

fn len_columns(spec: &FlowSpec) -> (&'static str, Option<i64>, Option<f64>) {
    match spec.flow_len {
        FlowLen::Bytes(b) => ("bytes", Some(b as i64), None),
        FlowLen::Duration(d) => ("duration", None, Some(d)),
    }
}

impl Store {
    /// Records a flow of `run`; its id.
    pub async fn insert_flow(
        &self,
        run: i64,
        src: u32,
        dst: u32,
        spec: &FlowSpec,
        start: Duration,
    ) -> Result<u64, StoreError> {
        Ok(self
            .insert_flows(run, &[(src, dst, spec.clone(), start)])
            .await?[0])
    }

    /// Records flows of `run`, in one transaction; their ids, in order.
    pub async fn insert_flows(
        &self,
        run: i64,
        flows: &[(u32, u32, FlowSpec, Duration)],
    ) -> Result<Vec<u64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut ids = Vec::with_capacity(flows.len());
        for (src, dst, spec, start) in flows {
            let (kind, bytes, secs) = len_columns(spec);
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO flows (run_id, src_node_id, dst_node_id, flow_len_type, flow_len_bytes, flow_len_duration, flow_rate, flow_weight, transport, cc, start_offset, state) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
            )
            .bind(run)
            .bind(i64::from(*src))
            .bind(i64::from(*dst))
            .bind(kind)
            .bind(bytes)
            .bind(secs)
            .bind(spec.flow_rate.map(|r| r as i64))
            .bind(spec.flow_weight.map(i64::from))
            .bind("tcp")
            .bind(spec.cc.clone())
            .bind(start.as_secs_f64())
            .bind("scheduled")
            .fetch_one(&mut *tx)
            .await?;
            ids.push(id as u64);
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Takes a flow a script inserted (no run yet) for `run`: the flow, or None when it is
    /// not there or another run took it.
    pub async fn claim_flow(&self, run: i64, id: u64) -> Result<Option<StoredFlow>, StoreError> {
        let row: Option<AnyRow> = sqlx::query(
            "UPDATE flows SET run_id = $1, state = 'scheduled' WHERE id = $2 AND run_id IS NULL \
             RETURNING id, src_node_id, dst_node_id, flow_len_type, flow_len_bytes, flow_len_duration, flow_rate, flow_weight, transport, cc, start_offset",
        )
        .bind(run)
        .bind(id as i64)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| stored_flow(&r)).transpose()
    }

    /// Flows scripts inserted that no run has taken, oldest first.
    pub async fn unclaimed_flows(&self) -> Result<Vec<u64>, StoreError> {
        let ids: Vec<(i64,)> =
            sqlx::query_as("SELECT id FROM flows WHERE run_id IS NULL ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        Ok(ids.into_iter().map(|(id,)| id as u64).collect())
    }

    /// Marks a claimed flow as refused, with the reason, so the script can read why.
    pub async fn refuse_flow(&self, id: u64, reason: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE flows SET state = 'failed', failure = $1 WHERE id = $2")
            .bind(reason)
            .bind(id as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The flows of a run as the store has them: (id, src, dst, state, fct in seconds).
    pub async fn flow_summaries(
        &self,
        run: i64,
    ) -> Result<Vec<(u64, u32, u32, String, Option<f64>)>, StoreError> {
        let rows: Vec<(i64, i64, i64, String, Option<f64>)> = sqlx::query_as(
            "SELECT id, src_node_id, dst_node_id, state, fct_seconds FROM flows WHERE run_id = $1 ORDER BY id",
        )
        .bind(run)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, s, d, state, fct)| (id as u64, s as u32, d as u32, state, fct))
            .collect())
    }
}

pub(super) fn stored_flow(r: &AnyRow) -> Result<StoredFlow, StoreError> {
    let bytes: Option<i64> = r.try_get("flow_len_bytes")?;
    let secs: Option<f64> = r.try_get("flow_len_duration")?;
    let kind: String = r.try_get("flow_len_type")?;
    let flow_len = match (kind.as_str(), bytes, secs) {
        ("duration", _, Some(s)) => FlowLen::Duration(s),
        (_, Some(b), _) => FlowLen::Bytes(b.max(0) as u64),
        _ => FlowLen::Bytes(0), // refused when the flow is added
    };
    let spec = FlowSpec {
        flow_len,
        flow_rate: r.try_get::<Option<i64>, _>("flow_rate")?.map(|v| v as u64),
        flow_weight: r
            .try_get::<Option<i64>, _>("flow_weight")?
            .map(|v| v as u32),
        // tcp is the only transport so far.
        transport: FlowTransport::Tcp,
        cc: r.try_get("cc")?,
    };
    Ok(StoredFlow {
        id: r.try_get::<i64, _>("id")? as u64,
        src: r.try_get::<i64, _>("src_node_id")? as u32,
        dst: r.try_get::<i64, _>("dst_node_id")? as u32,
        spec,
        start: Duration::from_secs_f64(
            r.try_get::<Option<f64>, _>("start_offset")?
                .unwrap_or(0.0)
                .max(0.0),
        ),
    })
}

/// Writes what is known of a flow now.
pub(super) async fn update(tx: &mut Transaction<'_, Any>, f: &FlowRow) -> Result<(), StoreError> {
    let tcp = f.tcp.unwrap_or_default();
    let finished = f.state == crate::flows::FlowState::Finished;
    sqlx::query(
        "UPDATE flows SET state = $1, is_finished = $2, local_port = $3, start_ns = $4, finish_ns = $5, fct_seconds = $6, bytes = $7, throughput_bps = $8, retransmits = $9, srtt_us = $10, cwnd = $11, failure = $12 WHERE id = $13",
    )
    // Not prepared once per connection: through sqlx's Any driver a NULL is declared with
    // another type than the later value, and PostgreSQL then misreads it.
    .persistent(false)
    .bind(f.state.as_str())
    .bind(finished)
    .bind(f.local_port.map(i64::from))
    .bind(f.start_ns.map(|v| v as i64))
    .bind(f.finish_ns.map(|v| v as i64))
    .bind(f.fct_seconds)
    .bind(f.bytes.map(|v| v as i64))
    .bind(f.throughput_bps)
    .bind(f.tcp.map(|_| tcp.retransmits as i64))
    .bind(f.tcp.map(|_| i64::from(tcp.srtt_us)))
    .bind(f.tcp.map(|_| i64::from(tcp.cwnd)))
    .bind(f.failure.clone())
    .bind(f.id as i64)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
