//! A small etcd v3 client over etcd's JSON gateway (`/v3/kv/*`, `/v3/watch`, `/v3/lease/*`),
//! with the HTTP client the rest of vantage already uses: keys and values are base64 in
//! JSON, a watch is one long response of newline-separated JSON messages. Endpoints are
//! tried in order until one answers.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Value, json};

/// Why etcd could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd is unreachable at {endpoints}: {detail}")]
    Unreachable { endpoints: String, detail: String },
    /// Members answered, or took the request and never answered, but none has a leader
    /// (electing one, or cut off from the others).
    #[error("etcd has no leader at {endpoints}: {detail}")]
    NoLeader { endpoints: String, detail: String },
    #[error("etcd refused the request: {0}")]
    Refused(String),
    #[error("etcd sent something unexpected: {0}")]
    Invalid(String),
}

/// Where the fleet's state lives in etcd, and how to reach it.
#[derive(Clone)]
pub struct Etcd {
    http: reqwest::Client,
    endpoints: Vec<url::Url>,
    prefix: String,
    /// User name and password, when etcd has authentication enabled.
    auth: Option<(String, String)>,
    /// The token of the last authentication, shared by clones.
    token: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn unb64(value: &Value) -> Result<Vec<u8>, EtcdError> {
    STANDARD
        .decode(value.as_str().unwrap_or_default())
        .map_err(|e| EtcdError::Invalid(format!("not base64: {e}")))
}

/// The key right after every key starting with `prefix` (etcd's `range_end` for a prefix).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn revision(v: &Value) -> i64 {
    v["header"]["revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

impl Etcd {
    /// `prefix` is prepended to every key (`/vantage/` by default: one fleet per prefix).
    /// `tls` is the CA that signs the etcd servers' certificates, and the client identity
    /// (certificate and key, PEM) when the servers require one.
    pub fn new(
        endpoints: Vec<url::Url>,
        prefix: &str,
        ca: Option<&[u8]>,
        identity: Option<&[u8]>,
    ) -> Result<Self, EtcdError> {
        let invalid = |e: reqwest::Error| EtcdError::Invalid(e.to_string());
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .http1_only();
        if let Some(ca) = ca {
            let certs = reqwest::Certificate::from_pem_bundle(ca).map_err(invalid)?;
            builder = builder.tls_certs_only(certs);
        }
        if let Some(identity) = identity {
            builder = builder.identity(reqwest::Identity::from_pem(identity).map_err(invalid)?);
        }
        Ok(Self {
            http: builder.build().map_err(invalid)?,
            endpoints,
            prefix: prefix.to_string(),
            auth: None,
            token: std::sync::Arc::default(),
        })
    }

    /// The client `[state]` describes.
    pub fn from_settings(settings: &crate::config::EtcdSettings) -> Result<Self, EtcdError> {
        let etcd = Self::new(
            settings.endpoints.clone(),
            &settings.prefix,
            settings.ca.as_deref(),
            settings.identity.as_deref(),
        )?;
        Ok(match &settings.auth {
            Some((user, password)) => {
                etcd.with_auth(user, String::from_utf8_lossy(password.bytes()).trim())
            }
            None => etcd,
        })
    }

    /// Authenticates as `user` (etcd's authentication enabled).
    pub fn with_auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.to_string(), password.to_string()));
        self
    }

    /// The token to send (authenticating first when there is none yet).
    async fn token(&self) -> Result<Option<String>, EtcdError> {
        let Some((user, password)) = &self.auth else {
            return Ok(None);
        };
        if let Some(token) = self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
        {
            return Ok(Some(token));
        }
        let v = self
            .send(
                "v3/auth/authenticate",
                &json!({"name": user, "password": password}),
                REQUEST_TIMEOUT,
                tokio::time::Instant::now() + REQUEST_TIMEOUT,
                None,
            )
            .await?;
        let token = v["token"]
            .as_str()
            .ok_or_else(|| EtcdError::Invalid(format!("no token in {v}")))?
            .to_string();
        *self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token.clone());
        Ok(Some(token))
    }

    fn forget_token(&self) {
        *self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn endpoints_text(&self) -> String {
        self.endpoints
            .iter()
            .map(url::Url::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// POSTs `body` to `path` at the first endpoint that answers, authenticated when etcd
    /// asks for it (once more with a fresh token when the last one expired). While the members
    /// have no leader (the leader was lost and the others are electing one: a request sent to
    /// a follower then is dropped and hangs), the endpoints are tried again until
    /// `CALL_BUDGET` has passed; when none can be reached at all, the error comes at once.
    /// Every request here may be repeated: a put writes the same value, a delete removes what
    /// is there, and a create taken by our own earlier attempt holds our own lease.
    async fn call(&self, path: &str, body: &Value, timeout: Duration) -> Result<Value, EtcdError> {
        let deadline = tokio::time::Instant::now() + CALL_BUDGET;
        let mut pause = RETRY_PAUSE;
        loop {
            match self.call_once(path, body, timeout, deadline).await {
                Err(EtcdError::NoLeader { .. })
                    if tokio::time::Instant::now() + pause < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_PAUSE * 8);
                }
                other => return other,
            }
        }
    }

    async fn call_once(
        &self,
        path: &str,
        body: &Value,
        timeout: Duration,
        deadline: tokio::time::Instant,
    ) -> Result<Value, EtcdError> {
        let token = self.token().await?;
        match self
            .send(path, body, timeout, deadline, token.as_deref())
            .await
        {
            Err(EtcdError::Refused(reason)) if self.auth.is_some() && reason.contains("token") => {
                self.forget_token();
                let token = self.token().await?;
                self.send(path, body, timeout, deadline, token.as_deref())
                    .await
            }
            other => other,
        }
    }

    async fn send(
        &self,
        path: &str,
        body: &Value,
        timeout: Duration,
        deadline: tokio::time::Instant,
        token: Option<&str>,
    ) -> Result<Value, EtcdError> {
        let mut last = String::from("no endpoint configured");
        // Whether a member took the request without a leader to agree on it (it said so, or
        // never answered): then the members may be electing one, and trying again helps.
        let mut leaderless = false;
        for endpoint in &self.endpoints {
            let Ok(url) = endpoint.join(path) else {
                continue;
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let mut request = self
                .http
                .post(url)
                .timeout(timeout.min(left))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
            if let Some(token) = token {
                request = request.header(reqwest::header::AUTHORIZATION, token);
            }
            let sent = request.send().await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => {
                    leaderless |= e.is_timeout();
                    last = crate::error_chain(&e);
                    continue;
                }
            };
            let status = response.status();
            let bytes = match response.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    last = crate::error_chain(&e);
                    continue;
                }
            };
            let value: Value = match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                // A proxy's error page, a member on its way down: another member may answer.
                Err(_) if status.is_server_error() => {
                    last = format!("HTTP {status}");
                    continue;
                }
                Err(e) => {
                    return Err(EtcdError::Invalid(format!(
                        "{e}: {}",
                        String::from_utf8_lossy(&bytes)
                    )));
                }
            };
            let reason = value["error"]
                .as_str()
                .or_else(|| value["message"].as_str());
            // A member without a leader (cut off from its peers, or electing one) cannot
            // answer: ask another. etcd says so with gRPC's Unavailable (14): "no leader",
            // "leader changed", "request timed out", "too many requests".
            if !status.is_success()
                && (value["code"].as_i64() == Some(14)
                    || reason.is_some_and(|r| r.contains("no leader")))
            {
                leaderless = true;
                last = reason.unwrap_or_default().to_string();
                continue;
            }
            if !status.is_success() {
                return Err(EtcdError::Refused(
                    value["error"]
                        .as_str()
                        .or_else(|| value["message"].as_str())
                        .unwrap_or("no reason given")
                        .to_string(),
                ));
            }
            return Ok(value);
        }
        let (endpoints, detail) = (self.endpoints_text(), last);
        Err(if leaderless {
            EtcdError::NoLeader { endpoints, detail }
        } else {
            EtcdError::Unreachable { endpoints, detail }
        })
    }

    /// Grants a lease of `ttl`; its id.
    pub async fn grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let v = self
            .call(
                "v3/lease/grant",
                &json!({"TTL": ttl.as_secs().max(1)}),
                REQUEST_TIMEOUT,
            )
            .await?;
        v["ID"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| EtcdError::Invalid(format!("no lease id in {v}")))
    }

    /// Writes `key` (under the prefix), attached to `lease` if given.
    pub async fn put(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<(), EtcdError> {
        let mut body =
            json!({"key": b64(format!("{}{key}", self.prefix).as_bytes()), "value": b64(value)});
        if let Some(lease) = lease {
            body["lease"] = json!(lease.to_string());
        }
        self.call("v3/kv/put", &body, REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    /// Creates `key` (under the prefix) with `value` on `lease` only if it does not exist:
    /// None when created, else the value it holds.
    pub async fn create(
        &self,
        key: &str,
        value: &[u8],
        lease: i64,
    ) -> Result<Option<Vec<u8>>, EtcdError> {
        let key = b64(format!("{}{key}", self.prefix).as_bytes());
        let v = self
            .call(
                "v3/kv/txn",
                &json!({
                    "compare": [{"key": key, "target": "CREATE", "create_revision": "0"}],
                    "success": [{"request_put": {"key": key, "value": b64(value), "lease": lease.to_string()}}],
                    "failure": [{"request_range": {"key": key}}],
                }),
                REQUEST_TIMEOUT,
            )
            .await?;
        if v["succeeded"].as_bool() == Some(true) {
            return Ok(None);
        }
        let held = &v["responses"][0]["response_range"]["kvs"][0]["value"];
        Ok(Some(if held.is_null() {
            Vec::new()
        } else {
            unb64(held)?
        }))
    }

    /// Renews `lease`; false when it is gone (expired or revoked).
    pub async fn keepalive(&self, lease: i64) -> Result<bool, EtcdError> {
        let v = self
            .call(
                "v3/lease/keepalive",
                &json!({"ID": lease.to_string()}),
                REQUEST_TIMEOUT,
            )
            .await?;
        Ok(v["result"]["TTL"]
            .as_str()
            .and_then(|t| t.parse::<i64>().ok())
            .is_some_and(|t| t > 0))
    }

    /// Ends `lease` now (its keys go with it).
    pub async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        self.call(
            "v3/lease/revoke",
            &json!({"ID": lease.to_string()}),
            REQUEST_TIMEOUT,
        )
        .await
        .map(drop)
    }

    /// Deletes `key` (under the prefix); whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, EtcdError> {
        let v = self
            .call(
                "v3/kv/deleterange",
                &json!({"key": b64(format!("{}{key}", self.prefix).as_bytes())}),
                REQUEST_TIMEOUT,
            )
            .await?;
        Ok(v["deleted"].as_str().is_some_and(|d| d != "0"))
    }

    /// Every key under `dir` (relative to the prefix, itself relative), and the store's
    /// revision at that moment.
    pub async fn list(&self, dir: &str) -> Result<(Vec<(String, Vec<u8>)>, i64), EtcdError> {
        let full = format!("{}{dir}", self.prefix);
        let v = self
            .call(
                "v3/kv/range",
                &json!({"key": b64(full.as_bytes()), "range_end": b64(&prefix_end(&full))}),
                REQUEST_TIMEOUT,
            )
            .await?;
        Ok((self.pairs(&v)?, revision(&v)))
    }

    /// The (key under the prefix, value) pairs of a range reply.
    fn pairs(&self, v: &Value) -> Result<Vec<(String, Vec<u8>)>, EtcdError> {
        let mut out = Vec::new();
        for kv in v["kvs"].as_array().into_iter().flatten() {
            let key = String::from_utf8_lossy(&unb64(&kv["key"])?).to_string();
            let key = key.strip_prefix(&self.prefix).unwrap_or(&key).to_string();
            out.push((key, unb64(&kv["value"])?));
        }
        Ok(out)
    }

    /// The newest `limit` keys under `dir` (by key, newest last).
    pub async fn list_latest(
        &self,
        dir: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, EtcdError> {
        let full = format!("{}{dir}", self.prefix);
        let v = self
            .call(
                "v3/kv/range",
                &json!({
                    "key": b64(full.as_bytes()),
                    "range_end": b64(&prefix_end(&full)),
                    "limit": limit.to_string(),
                    "sort_order": "DESCEND",
                    "sort_target": "KEY",
                }),
                REQUEST_TIMEOUT,
            )
            .await?;
        let mut out = self.pairs(&v)?;
        out.reverse();
        Ok(out)
    }

    /// Watches every key under `dir` from `revision` on, handing each change to `event`
    /// until the stream ends or fails (the caller reads the state again and watches anew).
    pub async fn watch(
        &self,
        dir: &str,
        revision: i64,
        mut event: impl FnMut(Event),
    ) -> Result<i64, EtcdError> {
        let full = format!("{}{dir}", self.prefix);
        let body = json!({"create_request": {
            "key": b64(full.as_bytes()),
            "range_end": b64(&prefix_end(&full)),
            "start_revision": revision.to_string(),
            "progress_notify": true,
        }});
        let mut last = String::new();
        let mut response = None;
        let token = self.token().await?;
        for endpoint in &self.endpoints {
            let Ok(url) = endpoint.join("v3/watch") else {
                continue;
            };
            // etcd ends the watch of a member that loses its leader (cut off from its peers)
            // instead of keeping it open with nothing on it.
            let mut request = self
                .http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("Grpc-Metadata-hasleader", "true")
                .body(body.to_string());
            if let Some(token) = &token {
                request = request.header(reqwest::header::AUTHORIZATION, token.as_str());
            }
            match request.send().await {
                Ok(r) if r.status().is_success() => {
                    response = Some(r);
                    break;
                }
                Ok(r) => last = format!("HTTP {}", r.status()),
                Err(e) => last = crate::error_chain(&e),
            }
        }
        let Some(mut response) = response else {
            return Err(EtcdError::Unreachable {
                endpoints: self.endpoints_text(),
                detail: last,
            });
        };
        let mut next = revision;
        let mut buffer = Vec::new();
        loop {
            let chunk = tokio::time::timeout(WATCH_IDLE, response.chunk()).await;
            let chunk = match chunk {
                Err(_) => {
                    return Err(EtcdError::Unreachable {
                        endpoints: self.endpoints_text(),
                        detail: format!("the watch was silent for {WATCH_IDLE:?}"),
                    });
                }
                Ok(Err(e)) => {
                    return Err(EtcdError::Unreachable {
                        endpoints: self.endpoints_text(),
                        detail: crate::error_chain(&e),
                    });
                }
                Ok(Ok(None)) => {
                    return Err(EtcdError::Unreachable {
                        endpoints: self.endpoints_text(),
                        detail: format!("the watch ended (resume at revision {next})"),
                    });
                }
                Ok(Ok(Some(chunk))) => chunk,
            };
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let message: Value = serde_json::from_slice(&line)
                    .map_err(|e| EtcdError::Invalid(format!("watch message: {e}")))?;
                let result = &message["result"];
                if message["error"].is_object() || message["error"].is_string() {
                    // e.g. an expired token: the caller watches again (authenticating anew).
                    self.forget_token();
                    return Err(EtcdError::Refused(format!(
                        "the watch ended: {}",
                        message["error"]
                    )));
                }
                if result["canceled"].as_bool() == Some(true) {
                    return Err(EtcdError::Refused(format!(
                        "the watch was cancelled: {}",
                        result["cancel_reason"]
                            .as_str()
                            .unwrap_or("no reason given")
                    )));
                }
                let events = result["events"].as_array().map_or(0, Vec::len);
                // The reply that creates the watch, and catch-up batches, carry the store's
                // current revision, not the last event sent: only events and progress notices
                // (no events, not the creation) move the resume point.
                if events == 0 && result["created"].as_bool() != Some(true) {
                    next = next.max(revision_of(result) + 1);
                }
                for e in result["events"].as_array().into_iter().flatten() {
                    let kv = &e["kv"];
                    let key = String::from_utf8_lossy(&unb64(&kv["key"])?).to_string();
                    let key = key.strip_prefix(&self.prefix).unwrap_or(&key).to_string();
                    if let Some(rev) = kv["mod_revision"]
                        .as_str()
                        .and_then(|r| r.parse::<i64>().ok())
                    {
                        next = next.max(rev + 1);
                    }
                    event(if e["type"].as_str() == Some("DELETE") {
                        Event::Delete { key }
                    } else {
                        Event::Put {
                            key,
                            value: unb64(&kv["value"])?,
                        }
                    });
                }
            }
        }
    }
}

fn revision_of(result: &Value) -> i64 {
    revision(result)
}

/// One attempt at one member gives up after this (a request a member takes while its
/// leader is gone is lost: it never answers).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// A request (every attempt at every member) gives up after this: long enough for the
/// members to elect a new leader (up to twice the election timeout, 3 s in a cluster spread
/// over regions) and take the request, short enough for the CLI that waits on an override
/// (`vantage override` gives up after 15 s).
const CALL_BUDGET: Duration = Duration::from_secs(10);
/// The pause before the members are tried again, doubling up to 8 times this.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// A watch asks for progress notifications (every 10 minutes by default in etcd); a watch
/// silent for longer than this is taken for lost.
const WATCH_IDLE: Duration = Duration::from_secs(15 * 60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_the_next_key() {
        assert_eq!(
            prefix_end("/vantage/overrides/"),
            b"/vantage/overrides0".to_vec()
        );
        assert_eq!(prefix_end("a\u{7f}"), vec![b'a', 0x80]);
    }
}
