//! The one observation every command starts from: connect, read what the command needs, detect
//! the facts, once. Commands get the same [`Observed`] and read nothing else from the cluster
//! until they write (the polls of `enable-hep --wait` and lockdown's probe aside).

use crate::cluster::Cluster;
use crate::cluster::inventory::{self, LiveState, Observe};
use crate::error::Result;
use crate::facts::{self, ClusterFacts};

use super::Context;

/// A connected cluster and one snapshot of it.
pub struct Observed {
    pub cluster: Cluster,
    /// What was detected from `live`.
    pub facts: ClusterFacts,
    pub live: LiveState,
}

impl Observed {
    /// Read and detect what `what` asks for over a connection already made (lockdown reads
    /// again after its writes to restore the safety net).
    pub async fn read(cluster: Cluster, what: &Observe) -> Result<Self> {
        let live = inventory::fetch_observed(&cluster, what).await?;
        let facts = facts::detect(&live.inventory);
        Ok(Self {
            cluster,
            facts,
            live,
        })
    }
}

impl Context {
    /// Connect, then read and detect what `what` asks for.
    pub async fn observe(&self, what: &Observe) -> Result<Observed> {
        Observed::read(self.connect().await?, what).await
    }
}
