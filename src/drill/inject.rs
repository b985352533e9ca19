//! The drill's overrides and the promise to clear them: `Restore` records every server an
//! override was sent to (before the request: it may take effect even if the reply is lost);
//! `finish` is the way out, clearing what is left; dropping it unfinished (a panic, a
//! cancelled task) still clears in the background, and the overrides expire by themselves.

use std::time::Duration;

use super::StepError;
use crate::adminctl::{AdminError, Session, Target};

/// The overrides of one drill on the fleet.
pub(super) struct Restore {
    session: Session,
    endpoint: String,
    /// The reason of the drill's overrides, unique to this drill: only those are cleared.
    reason: String,
    by: String,
    /// Where an override was (or may have been) set and is not cleared yet.
    set_on: Vec<Target>,
    finished: bool,
}

impl Restore {
    pub fn new(session: Session, endpoint: &str, reason: &str, by: &str) -> Self {
        Self {
            session,
            endpoint: endpoint.to_string(),
            reason: reason.to_string(),
            by: by.to_string(),
            set_on: Vec::new(),
            finished: false,
        }
    }

    /// Sets the drill's force_down override on `target` (`server` names it), expiring after
    /// `expiry`.
    pub async fn inject(
        &mut self,
        server: &str,
        target: &Target,
        expiry: Duration,
    ) -> Result<(), StepError> {
        self.set_on.push(target.clone());
        self.session
            .set_override(
                target,
                &self.endpoint,
                "force_down",
                &self.reason,
                &format!("{}s", expiry.as_secs()),
                &self.by,
            )
            .await
            .map(drop)
            .map_err(|source| StepError::Inject {
                server: server.to_string(),
                source,
            })
    }

    /// Clears every override still set (the failback); the first failure is returned, and
    /// what could not be cleared stays for `finish`.
    pub async fn clear_all(
        &mut self,
        why: &str,
        progress: &impl Fn(&str),
    ) -> Result<(), StepError> {
        let mut first = None;
        let mut left = Vec::new();
        for target in std::mem::take(&mut self.set_on) {
            if let Err(source) = self.clear_ours(&target, why, progress).await {
                first.get_or_insert(StepError::Restore {
                    base: target.base.to_string(),
                    source,
                });
                left.push(target);
            }
        }
        self.set_on = left;
        first.map_or(Ok(()), Err)
    }

    /// The way out: clears what is left; whether everything the drill set is cleared.
    pub async fn finish(mut self, progress: &impl Fn(&str)) -> bool {
        let mut restored = true;
        for target in std::mem::take(&mut self.set_on) {
            if let Err(e) = self.clear_ours(&target, "drill ended", progress).await {
                progress(&format!(
                    "cannot clear the drill's override at {}: {e}",
                    target.base
                ));
                restored = false;
            }
        }
        self.finished = true;
        restored
    }

    /// Clears the drill's override on one server: only if the override in force there is
    /// this drill's (an operator's override is left alone, and said so); gone already is fine.
    async fn clear_ours(
        &self,
        target: &Target,
        why: &str,
        progress: &impl Fn(&str),
    ) -> Result<(), AdminError> {
        let doc = self.session.overrides(target).await?;
        let current = doc["overrides"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["endpoint"].as_str() == Some(self.endpoint.as_str()));
        match current {
            None => Ok(()),
            Some(o) if o["reason"].as_str() == Some(self.reason.as_str()) => {
                match self
                    .session
                    .clear_override(target, &self.endpoint, why, &self.by)
                    .await
                {
                    Err(e) if e.is_not_found() => Ok(()),
                    other => other,
                }
            }
            Some(o) => {
                progress(&format!(
                    "{}: left the {} override on {} in force: it is not the drill's ({})",
                    target.base,
                    o["action"].as_str().unwrap_or("?"),
                    self.endpoint,
                    o["reason"].as_str().unwrap_or("")
                ));
                Ok(())
            }
        }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        if self.finished || self.set_on.is_empty() {
            return;
        }
        tracing::error!(
            endpoint = %self.endpoint,
            servers = self.set_on.len(),
            "the drill ended without clearing its overrides; clearing them now (they also expire by themselves)"
        );
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let rest = Restore {
            session: self.session.clone(),
            endpoint: self.endpoint.clone(),
            reason: self.reason.clone(),
            by: self.by.clone(),
            set_on: std::mem::take(&mut self.set_on),
            finished: false,
        };
        runtime.spawn(async move {
            rest.finish(&|line: &str| tracing::warn!("{line}")).await;
        });
    }
}
