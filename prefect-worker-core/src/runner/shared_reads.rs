//! Reads that runs share instead of repeating them: on a server that is the bottleneck of
//! a burst, every request a run does not make is throughput.
//!
//! - **Flows** are cached for the life of the worker: a flow's name (what the job
//!   configuration uses) cannot change; `PATCH /flows/{id}` only updates tags.
//! - **Deployments** are read once per poll and deployment: the runs of one poll share
//!   one `GET /deployments/{id}` (made by the first of them to get a submission slot, so
//!   it is as fresh as the first claim), where Python reads it once per run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::client::models::{Deployment, Flow};
use crate::client::{ClientError, PrefectClient};

/// Most flows kept; past it the cache starts over (a worker serving more distinct flows
/// than this reads some of them again, nothing worse).
const MAX_FLOWS: usize = 4096;

/// The flows read so far, by id.
#[derive(Debug, Default)]
pub(crate) struct FlowCache {
    flows: Mutex<HashMap<Uuid, Arc<Flow>>>,
}

impl FlowCache {
    /// The flow `id`, read from the API the first time only.
    pub(crate) async fn get(
        &self,
        client: &PrefectClient,
        id: Uuid,
    ) -> Result<Arc<Flow>, ClientError> {
        if let Some(f) = self.lock().get(&id) {
            return Ok(f.clone());
        }
        let flow = Arc::new(client.read_flow(id).await?);
        let mut flows = self.lock();
        if flows.len() >= MAX_FLOWS {
            flows.clear();
        }
        flows.insert(id, flow.clone());
        Ok(flow)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Flow>>> {
        // Single inserts and clears: a panic elsewhere cannot leave the map half-written.
        self.flows.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One deployment read shared by the runs of one poll.
#[derive(Debug, Clone)]
pub(crate) struct SharedDeployment {
    id: Uuid,
    cell: Arc<OnceCell<Result<Deployment, ClientError>>>,
}

impl SharedDeployment {
    /// The deployment, read by the first caller; the others get the same answer (or error).
    pub(crate) async fn get(&self, client: &PrefectClient) -> Result<Deployment, ClientError> {
        self.cell
            .get_or_init(|| client.read_deployment(self.id))
            .await
            .clone()
    }
}

/// Hands out one [`SharedDeployment`] per deployment id within one poll.
#[derive(Debug, Default)]
pub(crate) struct PollDeployments {
    reads: HashMap<Uuid, SharedDeployment>,
}

impl PollDeployments {
    pub(crate) fn for_deployment(&mut self, id: Uuid) -> SharedDeployment {
        self.reads
            .entry(id)
            .or_insert_with(|| SharedDeployment {
                id,
                cell: Arc::new(OnceCell::new()),
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_read_per_deployment_and_poll() {
        let mut poll = PollDeployments::default();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let a1 = poll.for_deployment(a);
        let a2 = poll.for_deployment(a);
        let b1 = poll.for_deployment(b);
        assert!(Arc::ptr_eq(&a1.cell, &a2.cell));
        assert!(!Arc::ptr_eq(&a1.cell, &b1.cell));
        let next_poll = PollDeployments::default().for_deployment(a);
        assert!(
            !Arc::ptr_eq(&a1.cell, &next_poll.cell),
            "a new poll reads again"
        );
    }
}
