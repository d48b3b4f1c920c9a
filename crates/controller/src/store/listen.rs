//! The seeds' way of driving a run from a database: a control script inserts a row into
//! `flows` on PostgreSQL, the trigger announces it on `auto_sync_flows`, and the run that
//! hears it claims the row and starts the flow; a row inserted or changed in `routes` is
//! announced on `auto_sync_routes` and pins (or, inactive, unpins) that route.

use sqlx::postgres::PgListener;

use super::{Store, StoreError};
use crate::server::ControllerHandle;

/// The channels the triggers notify on (the seeds' names).
pub const FLOWS_CHANNEL: &str = "auto_sync_flows";
pub const ROUTES_CHANNEL: &str = "auto_sync_routes";

#[derive(Debug, serde::Deserialize)]
struct FlowNotice {
    newly_inserted_id: i64,
}

#[derive(Debug, serde::Deserialize)]
struct RouteNotice {
    route_id: i64,
}

/// Listens for scripts' rows until the controller stops. Subscribed before it returns, so a
/// row inserted after `up` reported ready is never missed; rows inserted before are claimed
/// too.
pub async fn spawn(store: Store, run: i64, handle: ControllerHandle) -> Result<(), StoreError> {
    let mut listener = PgListener::connect(&store.connect_url).await?;
    listener.listen_all([FLOWS_CHANNEL, ROUTES_CHANNEL]).await?;
    tokio::spawn(async move {
        // Rows a script wrote while no run listened.
        if let Ok(ids) = store.unclaimed_flows().await {
            for id in ids {
                claim(&store, run, &handle, id).await;
            }
        }
        if let Ok(ids) = store.unclaimed_routes().await {
            for id in ids {
                apply_route(&store, run, &handle, id).await;
            }
        }
        loop {
            tokio::select! {
                notice = listener.recv() => match notice {
                    Ok(n) if n.channel() == FLOWS_CHANNEL => {
                        match serde_json::from_str::<FlowNotice>(n.payload()) {
                            Ok(f) => claim(&store, run, &handle, f.newly_inserted_id as u64).await,
                            Err(e) => tracing::warn!("a notice on {FLOWS_CHANNEL} I cannot read: {e}"),
                        }
                    }
                    Ok(n) => match serde_json::from_str::<RouteNotice>(n.payload()) {
                        Ok(r) => apply_route(&store, run, &handle, r.route_id).await,
                        Err(e) => tracing::warn!("a notice on {} I cannot read: {e}", n.channel()),
                    },
                    Err(e) => {
                        tracing::warn!("stopped listening to the store: {e}");
                        break;
                    }
                },
                () = handle.stopped() => break,
            }
        }
    });
    Ok(())
}

async fn claim(store: &Store, run: i64, handle: &ControllerHandle, id: u64) {
    match store.claim_flow(run, id).await {
        Ok(Some(f)) => match handle.add_flow(f.id, f.src, f.dst, f.spec, f.start).await {
            Some(Ok(())) => tracing::info!("flow {id} from the store: {} -> {}", f.src, f.dst),
            Some(Err(e)) => {
                tracing::warn!("flow {id} from the store refused: {e}");
                let _ = store.refuse_flow(id, &e.to_string()).await;
            }
            None => {}
        },
        Ok(None) => {}
        Err(e) => tracing::warn!("could not claim flow {id}: {e}"),
    }
}

async fn apply_route(store: &Store, run: i64, handle: &ControllerHandle, route_id: i64) {
    let stored = match store.claim_route(run, route_id).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!("routes row {route_id}: {e}");
            return;
        }
    };
    let (src, dst) = (stored.route.src, stored.route.dst);
    if stored.active {
        match handle.set_route(stored.route).await {
            Some(Ok(a)) => tracing::info!(
                "route {src}->{dst} from the store (row {route_id}): {} node(s) in {:.1} ms",
                a.nodes,
                a.applied_ms
            ),
            Some(Err(e)) => tracing::warn!("routes row {route_id} refused: {e}"),
            None => {}
        }
    } else {
        let _ = handle.unset_route(stored.route).await;
    }
}
