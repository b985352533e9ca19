//! "Check it now": an aggregator's requests to probers to check an endpoint at once, one
//! channel per region, to an in-process prober or to the puller that forwards them to a
//! remote prober (`POST /v1/check`). Sending never waits: a full channel drops the request
//! (probers rate-limit them anyway).

use std::collections::HashMap;

use tokio::sync::mpsc;

use crate::model::{EndpointId, Region};

/// Requests waiting for one prober (or its puller) at most.
const CAPACITY: usize = 1024;

pub type AskSender = mpsc::Sender<EndpointId>;
pub type AskReceiver = mpsc::Receiver<EndpointId>;

pub fn channel() -> (AskSender, AskReceiver) {
    mpsc::channel(CAPACITY)
}

/// Where the aggregator's "check it now" requests go, by region.
#[derive(Default, Clone)]
pub struct Asks {
    to: HashMap<Region, AskSender>,
}

impl Asks {
    pub fn insert(&mut self, region: Region, sender: AskSender) {
        self.to.insert(region, sender);
    }

    /// Asks `region`'s prober to check `endpoint` now; false when it cannot be asked (no such
    /// prober here, or its queue is full).
    pub fn ask(&self, region: &Region, endpoint: &EndpointId) -> bool {
        self.to
            .get(region)
            .is_some_and(|to| to.try_send(endpoint.clone()).is_ok())
    }
}
