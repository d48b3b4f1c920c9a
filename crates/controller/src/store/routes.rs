//! Routes in the store: the seeds' `routes` table (edges as `[[a, b], …]`), a row for every
//! route set while the run goes on, inactive once cleared. On PostgreSQL a control script's
//! INSERT or UPDATE is announced (`auto_sync_routes`) and applied by the run.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{Store, StoreError};
use crate::coordinator::{RouteFilter, RouteRequest};

/// A row of `routes` as a script left it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRoute {
    pub route: RouteRequest,
    pub active: bool,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i64
}

impl Store {
    fn json_param(&self, n: usize) -> String {
        if self.postgres {
            format!("CAST(${n} AS JSONB)")
        } else {
            format!("${n}")
        }
    }

    /// Records a route set in `run`, replacing an active one of the same ends and flow.
    pub async fn record_route(&self, run: i64, route: &RouteRequest) -> Result<(), StoreError> {
        let edges = serde_json::to_string(&route.edges).expect("edges encode");
        let mut tx = self.pool.begin().await?;
        self.deactivate(
            &mut tx,
            run,
            &RouteFilter {
                src: Some(route.src),
                dst: Some(route.dst),
                flow: route.flow,
            },
            true,
        )
        .await?;
        sqlx::query(&format!(
            "INSERT INTO routes (run_id, src_node_id, dst_node_id, edges, flow, active, updated_ns) VALUES ($1, $2, $3, {}, $5, $6, $7)",
            self.json_param(4)
        ))
        .bind(run)
        .bind(i64::from(route.src))
        .bind(i64::from(route.dst))
        .bind(edges)
        .bind(route.flow.map(|f| f as i64))
        .bind(true)
        .bind(now_ns())
        .persistent(false)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks the routes of `run` that `filter` matches inactive.
    pub async fn clear_routes(&self, run: i64, filter: &RouteFilter) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        self.deactivate(&mut tx, run, filter, false).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn deactivate(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        run: i64,
        filter: &RouteFilter,
        exact_flow: bool,
    ) -> Result<(), StoreError> {
        // A filter's missing field matches anything; replacing a route matches its flow
        // exactly (a route for the pair is not one for a flow).
        let mut sql = String::from(
            "UPDATE routes SET active = $1, updated_ns = $2 WHERE run_id = $3 AND active = $4",
        );
        let mut values: Vec<i64> = Vec::new();
        for (column, value) in [
            ("src_node_id", filter.src.map(i64::from)),
            ("dst_node_id", filter.dst.map(i64::from)),
            ("flow", filter.flow.map(|f| f as i64)),
        ] {
            if let Some(v) = value {
                values.push(v);
                sql.push_str(&format!(" AND {column} = ${}", 4 + values.len()));
            } else if column == "flow" && exact_flow {
                sql.push_str(" AND flow IS NULL");
            }
        }
        let mut query = sqlx::query(&sql)
            .bind(false)
            .bind(now_ns())
            .bind(run)
            .bind(true);
        for v in values {
            query = query.bind(v);
        }
        query.persistent(false).execute(&mut **tx).await?;
        Ok(())
    }

    /// Active routes scripts inserted that no run has taken, oldest first.
    pub async fn unclaimed_routes(&self) -> Result<Vec<i64>, StoreError> {
        let ids: Vec<(i64,)> = sqlx::query_as(
            "SELECT CAST(route_id AS BIGINT) FROM routes WHERE run_id IS NULL AND active = $1 ORDER BY route_id",
        )
        .bind(true)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }

    /// A row a script wrote or changed, taken for `run`; None when another run has it.
    pub async fn claim_route(
        &self,
        run: i64,
        route_id: i64,
    ) -> Result<Option<StoredRoute>, StoreError> {
        let edges_text = if self.postgres {
            "edges::text"
        } else {
            "edges"
        };
        let row: Option<(i64, i64, String, Option<i64>, i64)> = sqlx::query_as(&format!(
            "SELECT src_node_id, dst_node_id, {edges_text}, flow, CAST(CASE WHEN active THEN 1 ELSE 0 END AS BIGINT) \
             FROM routes WHERE route_id = $1 AND (run_id IS NULL OR run_id = $2)"
        ))
        .bind(route_id)
        .bind(run)
        .fetch_optional(&self.pool)
        .await?;
        let Some((src, dst, edges, flow, active)) = row else {
            return Ok(None);
        };
        sqlx::query("UPDATE routes SET run_id = $1 WHERE route_id = $2 AND run_id IS NULL")
            .bind(run)
            .bind(route_id)
            .execute(&self.pool)
            .await?;
        let edges: Vec<(u32, u32)> = serde_json::from_str(&edges).map_err(|e| {
            StoreError::Query(sqlx::Error::Decode(
                format!("routes row {route_id}: edges are not [[a, b], …]: {e}").into(),
            ))
        })?;
        Ok(Some(StoredRoute {
            route: RouteRequest {
                src: src as u32,
                dst: dst as u32,
                edges,
                flow: flow.map(|f| f as u64),
            },
            active: active != 0,
        }))
    }
}
