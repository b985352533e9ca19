//! What the reconciler needs from Route53, as a trait: the SDK client implements it, and so
//! does the stateful fake used to test reconciler semantics.

use super::{Change, RecordSet};

/// What the credentials must allow (README, Route53).
pub const IAM_ACTIONS: &str = "vantage needs route53:ListResourceRecordSets, route53:ChangeResourceRecordSets and route53:GetChange on the hosted zones it pushes to";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("throttled: {0}")]
    Throttled(String),
    #[error("a prior change is not complete yet: {0}")]
    PriorRequestNotComplete(String),
    /// The batch was refused whole, e.g. a DELETE no longer matches (someone changed the
    /// records since we read them).
    #[error("change batch refused: {0}")]
    InvalidChangeBatch(String),
    #[error("Route53 server error: {0}")]
    Server(String),
    #[error("cannot reach Route53: {0}")]
    Transport(String),
    /// No credentials could be found: retrying cannot help.
    #[error(
        "no AWS credentials: {0} (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or give the host or pod a role; {IAM_ACTIONS})"
    )]
    Credentials(String),
    /// The credentials were refused, or lack a permission: retrying cannot help.
    #[error("Route53 refused the credentials or a permission: {0} ({IAM_ACTIONS})")]
    Denied(String),
    #[error("{0}")]
    Other(String),
}

impl ApiError {
    /// Worth retrying after a pause.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ApiError::Throttled(_)
                | ApiError::PriorRequestNotComplete(_)
                | ApiError::Server(_)
                | ApiError::Transport(_)
        )
    }

    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ApiError::Throttled(_) => "throttled",
            ApiError::PriorRequestNotComplete(_) => "prior_request_not_complete",
            ApiError::InvalidChangeBatch(_) => "invalid_change_batch",
            ApiError::Server(_) => "server_error",
            ApiError::Transport(_) => "transport_error",
            ApiError::Credentials(_) => "no_credentials",
            ApiError::Denied(_) => "access_denied",
            ApiError::Other(_) => "error",
        }
    }
}

/// Where a page of `ListResourceRecordSets` starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageStart {
    pub name: String,
    pub rtype: String,
    pub identifier: Option<String>,
}

/// One page of record sets, and where the next one starts.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub sets: Vec<RecordSet>,
    pub next: Option<PageStart>,
}

/// The most pages one listing may take (1,000,000 record sets at 300 a page).
const MAX_PAGES: usize = 3_400;

/// Every record set of a hosted zone, page by page. Stops with an error instead of looping
/// when a page starts where an earlier one did (an emulator that never advances).
pub async fn list_all<A: Api + ?Sized>(api: &A, zone: &str) -> Result<Vec<RecordSet>, ApiError> {
    let mut sets = Vec::new();
    let mut start: Option<PageStart> = None;
    let mut seen: Vec<PageStart> = Vec::new();
    for _ in 0..MAX_PAGES {
        let page = api.list_page(zone, start.as_ref()).await?;
        sets.extend(page.sets);
        match page.next {
            None => return Ok(sets),
            Some(next) => {
                if seen.contains(&next) {
                    return Err(ApiError::Other(format!(
                        "ListResourceRecordSets for {zone} does not advance (next page starts again at {} {} {:?}); giving up instead of looping",
                        next.name, next.rtype, next.identifier
                    )));
                }
                seen.push(next.clone());
                start = Some(next);
            }
        }
    }
    Err(ApiError::Other(format!(
        "ListResourceRecordSets for {zone} took more than {MAX_PAGES} pages"
    )))
}

#[async_trait::async_trait]
pub trait Api: Send + Sync {
    /// One page of the hosted zone's record sets.
    async fn list_page(&self, zone: &str, start: Option<&PageStart>) -> Result<Page, ApiError>;
    /// Applies one atomic batch; returns the change id.
    async fn change(
        &self,
        zone: &str,
        changes: &[Change],
        comment: &str,
    ) -> Result<String, ApiError>;
    /// Whether a change has propagated to every Route53 name server.
    async fn is_insync(&self, change_id: &str) -> Result<bool, ApiError>;
}
