//! The seeds' way of driving a run from a database: a control script inserts a row into
//! `flows` on PostgreSQL, the trigger announces it on `auto_sync_flows`, and the run that
//! hears it claims the row and starts the flow.

use sqlx::postgres::PgListener;

use super::{Store, StoreError};
use crate::server::ControllerHandle;

/// The channel the `flows` trigger notifies on (the seeds' name).
pub const FLOWS_CHANNEL: &str = "auto_sync_flows";

#[derive(Debug, serde::Deserialize)]
struct FlowNotice {
    newly_inserted_id: i64,
}

/// Listens for scripts' rows until the controller stops. Subscribed before it returns, so a
/// row inserted after `up` reported ready is never missed; rows inserted before are claimed
/// too.
pub async fn spawn(store: Store, run: i64, handle: ControllerHandle) -> Result<(), StoreError> {
    let mut listener = PgListener::connect(&store.connect_url).await?;
    listener.listen(FLOWS_CHANNEL).await?;
    tokio::spawn(async move {
        // Rows a script wrote while no run listened.
        if let Ok(ids) = store.unclaimed_flows().await {
            for id in ids {
                claim(&store, run, &handle, id).await;
            }
        }
        loop {
            tokio::select! {
                notice = listener.recv() => match notice {
                    Ok(n) => match serde_json::from_str::<FlowNotice>(n.payload()) {
                        Ok(f) if n.channel() == FLOWS_CHANNEL => {
                            claim(&store, run, &handle, f.newly_inserted_id as u64).await
                        }
                        Ok(_) => {}
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
