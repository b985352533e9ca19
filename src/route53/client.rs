//! The Route53 API through the AWS SDK: the only module that uses aws-sdk types. Credentials
//! come from the AWS default chain; the endpoint can be overridden (emulators, tests). The SDK's
//! own retries are off: `retry::Paced` paces and retries, so that every attempt is counted.

use aws_config::{BehaviorVersion, Region, retry::RetryConfig};
use aws_sdk_route53::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
    types::{self, ChangeAction, ChangeStatus, RrType},
};

use super::{
    Change, RecordSet,
    api::{Api, ApiError, Page, PageStart},
};
use crate::config::Route53Settings;

pub struct Route53Client {
    client: Client,
}

impl Route53Client {
    pub async fn new(settings: &Route53Settings) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .retry_config(RetryConfig::disabled())
            // A stalled request must not stall the reconciler.
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(std::time::Duration::from_secs(3))
                    .read_timeout(std::time::Duration::from_secs(10))
                    .operation_attempt_timeout(std::time::Duration::from_secs(15))
                    .operation_timeout(std::time::Duration::from_secs(30))
                    .build(),
            );
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url.as_str().trim_end_matches('/'));
        }
        let config = loader.load().await;
        Self {
            client: Client::new(&config),
        }
    }
}

type HttpResponse = aws_sdk_route53::config::http::HttpResponse;

fn api_error<E>(e: SdkError<E, HttpResponse>) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    match &e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let message = format!(
                "{}: {}",
                err.code().unwrap_or("?"),
                err.message().unwrap_or("")
            );
            match err.code() {
                Some("Throttling" | "ThrottlingException" | "RequestLimitExceeded") => {
                    ApiError::Throttled(message)
                }
                Some("PriorRequestNotComplete") => ApiError::PriorRequestNotComplete(message),
                Some("InvalidChangeBatch") => ApiError::InvalidChangeBatch(message),
                Some(
                    "AccessDenied"
                    | "AccessDeniedException"
                    | "InvalidClientTokenId"
                    | "UnrecognizedClientException"
                    | "SignatureDoesNotMatch"
                    | "InvalidSignatureException"
                    | "ExpiredToken"
                    | "ExpiredTokenException",
                ) => ApiError::Denied(message),
                _ if status == Some(403) => ApiError::Denied(message),
                _ if status.is_some_and(|s| s >= 500) => ApiError::Server(message),
                _ => ApiError::Other(message),
            }
        }
        SdkError::DispatchFailure(_) if crate::error_chain(&e).contains("credential") => {
            ApiError::Credentials(crate::error_chain(&e))
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => {
            ApiError::Transport(crate::error_chain(&e))
        }
        SdkError::ResponseError(_) if status.is_some_and(|s| s >= 500) => {
            ApiError::Server(crate::error_chain(&e))
        }
        _ => ApiError::Other(crate::error_chain(&e)),
    }
}

fn from_sdk(set: &types::ResourceRecordSet) -> RecordSet {
    let opaque = set.alias_target().is_some()
        || set.geo_location().is_some()
        || set.failover().is_some()
        || (set.region().is_some() && set.weight().is_some())
        || set.multi_value_answer().is_some()
        || set.health_check_id().is_some()
        || set.cidr_routing_config().is_some()
        || set.geo_proximity_location().is_some()
        || set.traffic_policy_instance_id().is_some();
    let mut out = RecordSet::new(
        &set.name().to_ascii_lowercase(),
        set.r#type().as_str(),
        set.ttl().unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
        set.resource_records()
            .iter()
            .map(|r| r.value().to_string())
            .collect(),
    );
    if let Some(id) = set.set_identifier() {
        out.set_identifier = Some(id.to_string());
        out.weight = set.weight().map(|w| w.clamp(0, 255) as u8);
        out.region = set.region().map(|r| r.as_str().to_string());
    }
    out.opaque = opaque;
    out
}

fn to_sdk(change: &Change) -> Result<types::Change, ApiError> {
    let (action, set) = match change {
        Change::Create(s) => (ChangeAction::Create, s),
        Change::Delete(s) => (ChangeAction::Delete, s),
    };
    let records = set
        .values
        .iter()
        .map(|v| types::ResourceRecord::builder().value(v).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Other(e.to_string()))?;
    let mut builder = types::ResourceRecordSet::builder()
        .name(&set.name)
        .r#type(RrType::from(set.rtype.as_str()))
        .ttl(i64::from(set.ttl))
        .set_resource_records(Some(records));
    if let (Some(id), Some(weight)) = (&set.set_identifier, set.weight) {
        builder = builder.set_identifier(id).weight(i64::from(weight));
    }
    if let (Some(id), Some(region)) = (&set.set_identifier, &set.region) {
        builder = builder
            .set_identifier(id)
            .region(types::ResourceRecordSetRegion::from(region.as_str()));
    }
    let set = builder
        .build()
        .map_err(|e| ApiError::Other(e.to_string()))?;
    types::Change::builder()
        .action(action)
        .resource_record_set(set)
        .build()
        .map_err(|e| ApiError::Other(e.to_string()))
}

#[async_trait::async_trait]
impl Api for Route53Client {
    async fn list_page(&self, zone: &str, start: Option<&PageStart>) -> Result<Page, ApiError> {
        let mut request = self
            .client
            .list_resource_record_sets()
            .hosted_zone_id(zone)
            .max_items(300);
        if let Some(start) = start {
            request = request
                .start_record_name(&start.name)
                .start_record_type(RrType::from(start.rtype.as_str()))
                .set_start_record_identifier(start.identifier.clone());
        }
        let out = request.send().await.map_err(api_error)?;
        let next = if out.is_truncated() {
            out.next_record_name().map(|name| PageStart {
                name: name.to_string(),
                rtype: out
                    .next_record_type()
                    .map_or_else(String::new, |t| t.as_str().to_string()),
                identifier: out.next_record_identifier().map(str::to_string),
            })
        } else {
            None
        };
        Ok(Page {
            sets: out.resource_record_sets().iter().map(from_sdk).collect(),
            next,
        })
    }

    async fn change(
        &self,
        zone: &str,
        changes: &[Change],
        comment: &str,
    ) -> Result<String, ApiError> {
        let changes = changes.iter().map(to_sdk).collect::<Result<Vec<_>, _>>()?;
        let batch = types::ChangeBatch::builder()
            .comment(comment)
            .set_changes(Some(changes))
            .build()
            .map_err(|e| ApiError::Other(e.to_string()))?;
        let out = self
            .client
            .change_resource_record_sets()
            .hosted_zone_id(zone)
            .change_batch(batch)
            .send()
            .await
            .map_err(|e| {
                use aws_sdk_route53::operation::change_resource_record_sets::ChangeResourceRecordSetsError;
                // Route53 says which changes it refuses, one message each.
                if let Some(ChangeResourceRecordSetsError::InvalidChangeBatch(refusal)) =
                    e.as_service_error()
                {
                    let mut messages: Vec<&str> =
                        refusal.messages().iter().map(String::as_str).collect();
                    messages.extend(refusal.message());
                    return ApiError::InvalidChangeBatch(format!(
                        "InvalidChangeBatch: {}",
                        messages.join("; ")
                    ));
                }
                api_error(e)
            })?;
        Ok(out
            .change_info()
            .map(|c| c.id().to_string())
            .unwrap_or_default())
    }

    async fn is_insync(&self, change_id: &str) -> Result<bool, ApiError> {
        let out = self
            .client
            .get_change()
            .id(change_id)
            .send()
            .await
            .map_err(api_error)?;
        Ok(out
            .change_info()
            .is_some_and(|c| *c.status() == ChangeStatus::Insync))
    }
}
