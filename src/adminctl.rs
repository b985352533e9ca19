//! The command-line client of a running vantage's admin API: `vantage override` and
//! `vantage status` (the status rendered as terminal tables).

use std::{net::IpAddr, path::Path};

use serde_json::{Value, json};

/// Why a request to an admin API failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Where to send it is unknown or malformed (configuration, URL, token file).
    #[error("{0}")]
    Setup(String),
    /// Nothing answered there, or not in time.
    #[error("cannot reach the admin API at {base}: {why} ({detail})")]
    Unreachable {
        base: String,
        why: &'static str,
        detail: String,
    },
    /// The server refused the request.
    #[error("HTTP {status}: {message}")]
    Refused {
        status: reqwest::StatusCode,
        message: String,
    },
    /// The answer is not what the API sends.
    #[error("HTTP {status}: {detail}")]
    Invalid {
        status: reqwest::StatusCode,
        detail: String,
    },
}

impl AdminError {
    /// The server answered 404 (e.g. an override already gone).
    pub fn is_not_found(&self) -> bool {
        matches!(self, AdminError::Refused { status, .. } if *status == reqwest::StatusCode::NOT_FOUND)
    }
}

fn setup(e: impl std::fmt::Display) -> AdminError {
    AdminError::Setup(e.to_string())
}

/// Where the admin API is, and the token for writes.
#[derive(Debug, Clone)]
pub struct Target {
    pub base: url::Url,
    pub token: Option<String>,
}

impl Target {
    /// From `--admin URL` and `--token-file`, else from the configuration file.
    pub fn resolve(
        config: Option<&Path>,
        admin: Option<&str>,
        token_file: Option<&Path>,
    ) -> Result<Target, AdminError> {
        let mut token = match token_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| setup(format!("{}: {e}", f.display())))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        // Only the [admin] table is needed, and it is read leniently: `vantage reload` must
        // work while the rest of the file is broken (the server reports those problems).
        let admin_table = match config {
            Some(config) => Some(admin_of(config)?),
            None => None,
        };
        if token.is_none() {
            token = admin_table.as_ref().and_then(|(_, t)| t.clone());
        }
        let base = match (admin, &admin_table) {
            (Some(url), _) => {
                // `--admin 127.0.0.1:8053` means http://127.0.0.1:8053.
                let with_scheme = if url.contains("://") {
                    url.to_string()
                } else {
                    format!("http://{url}")
                };
                url::Url::parse(&with_scheme).map_err(|e| {
                    setup(format!(
                        "--admin {url:?} is not a URL ({e}); e.g. http://127.0.0.1:8053"
                    ))
                })?
            }
            (None, Some((addr, _))) => {
                let mut addr = *addr;
                if addr.ip().is_unspecified() {
                    addr.set_ip(IpAddr::from([127, 0, 0, 1]));
                }
                url::Url::parse(&format!("http://{addr}/")).map_err(setup)?
            }
            (None, None) => return Err(setup("give --config FILE or --admin URL")),
        };
        Ok(Target { base, token })
    }

    fn url(&self, path: &str) -> Result<url::Url, AdminError> {
        self.base.join(path).map_err(setup)
    }

    /// The Route53 reconciler the same file runs beside a DNS server (`route53.admin_listen`),
    /// when overrides are kept per process (the file backend): an override set through the
    /// DNS server alone would leave Route53 answering otherwise. None with etcd (one write
    /// reaches every process) or without a reconciler of its own listener.
    pub fn reconciler_beside(config: &Path, primary: &Target) -> Option<Target> {
        let table: toml::Table = toml::from_str(&std::fs::read_to_string(config).ok()?).ok()?;
        let shared = table
            .get("state")
            .and_then(|s| s.get("backend"))
            .and_then(|b| b.as_str())
            .is_some_and(|b| b == "etcd");
        if shared {
            return None;
        }
        let mut addr: std::net::SocketAddr = table
            .get("route53")?
            .get("admin_listen")?
            .as_str()?
            .parse()
            .ok()?;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::from([127, 0, 0, 1]));
        }
        let base = url::Url::parse(&format!("http://{addr}/")).ok()?;
        (base != primary.base).then(|| Target {
            base,
            token: primary.token.clone(),
        })
    }
}

/// The admin listen address and token (or read token) of a configuration file, read from its `[admin]` table.
fn admin_of(config: &Path) -> Result<(std::net::SocketAddr, Option<String>), AdminError> {
    let text =
        std::fs::read_to_string(config).map_err(|e| setup(format!("{}: {e}", config.display())))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| setup(format!("{}: {e}", config.display())))?;
    let admin = table.get("admin").and_then(|a| a.as_table());
    let listen = admin
        .and_then(|a| a.get("listen"))
        .and_then(|l| l.as_str())
        .unwrap_or(crate::config::defaults::ADMIN_LISTEN);
    let listen = listen.parse().map_err(|_| {
        setup(format!(
            "{}: admin.listen {listen:?} is not an address:port",
            config.display()
        ))
    })?;
    // The admin token does everything; a read token is enough for status.
    let token = match admin
        .and_then(|a| a.get("token_file").or_else(|| a.get("read_token_file")))
        .and_then(|t| t.as_str())
    {
        None => None,
        Some(file) => {
            let path = config.parent().unwrap_or(Path::new(".")).join(file);
            Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| setup(format!("{}: {e}", path.display())))?
                    .trim()
                    .to_string(),
            )
        }
    };
    Ok((listen, token))
}

/// One HTTP client for many requests to several admin APIs (`vantage drill` polls them).
#[derive(Clone)]
pub struct Session {
    http: reqwest::Client,
}

impl Session {
    /// Every request gives up after `timeout`.
    pub fn new(timeout: std::time::Duration) -> Result<Session, AdminError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .build()
            .map_err(setup)?;
        Ok(Session { http })
    }

    /// `GET /v1/status`.
    pub async fn status(&self, target: &Target) -> Result<Value, AdminError> {
        self.get(target, "v1/status").await
    }

    /// `GET /v1/overrides`: the overrides in force.
    pub async fn overrides(&self, target: &Target) -> Result<Value, AdminError> {
        self.get(target, "v1/overrides").await
    }

    /// A JSON document of the admin API (with the token, for servers that require one to read).
    async fn get(&self, target: &Target, path: &str) -> Result<Value, AdminError> {
        let request = bearer(target, self.http.get(target.url(path)?));
        reply(request.send().await.map_err(|e| unreachable(target, &e))?).await
    }

    /// `POST /v1/overrides`; `duration` as in the API ("90s").
    pub async fn set_override(
        &self,
        target: &Target,
        endpoint: &str,
        action: &str,
        reason: &str,
        duration: &str,
        by: &str,
    ) -> Result<Value, AdminError> {
        let request = self
            .http
            .post(target.url("v1/overrides")?)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(json!({"endpoint": endpoint, "action": action, "reason": reason, "for": duration, "by": by}).to_string());
        self.send(target, request).await
    }

    /// Sends a request with the admin token; the JSON reply, or the error it carries.
    async fn send(
        &self,
        target: &Target,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, AdminError> {
        reply(
            bearer(target, request)
                .send()
                .await
                .map_err(|e| unreachable(target, &e))?,
        )
        .await
    }

    /// `DELETE /v1/overrides/{endpoint}`.
    pub async fn clear_override(
        &self,
        target: &Target,
        endpoint: &str,
        reason: &str,
        by: &str,
    ) -> Result<(), AdminError> {
        let request = self
            .http
            .delete(override_url(target, endpoint, reason, by)?);
        self.send(target, request).await.map(drop)
    }

    /// `POST /v1/drills`: hands a drill result to a serving process (the type it parses).
    pub async fn post_drill(
        &self,
        target: &Target,
        result: &crate::state::drills::DrillResult,
    ) -> Result<(), AdminError> {
        let request = self
            .http
            .post(target.url("v1/drills")?)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_string(result).map_err(setup)?);
        self.send(target, request).await?;
        Ok(())
    }
}

fn override_url(
    target: &Target,
    endpoint: &str,
    reason: &str,
    by: &str,
) -> Result<url::Url, AdminError> {
    let mut url = target.url("v1/overrides/")?;
    url.path_segments_mut()
        .map_err(|()| setup("the admin URL cannot have a path"))?
        .pop_if_empty()
        .push(endpoint);
    url.query_pairs_mut()
        .append_pair("by", by)
        .append_pair("reason", reason);
    Ok(url)
}

/// How long the CLI's admin requests may take (an override waits for etcd, which may be
/// electing a leader: up to 10 s).
const CLIENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

fn client() -> Result<reqwest::Client, AdminError> {
    Session::new(CLIENT_TIMEOUT).map(|s| s.http)
}

async fn reply(response: reqwest::Response) -> Result<Value, AdminError> {
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| AdminError::Invalid {
        status,
        detail: e.to_string(),
    })?;
    let body: Value = serde_json::from_slice(&bytes).map_err(|e| AdminError::Invalid {
        status,
        detail: format!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)),
    })?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(AdminError::Refused {
            status,
            message: body["error"]
                .as_str()
                .unwrap_or("request refused")
                .to_string(),
        })
    }
}

/// Why the admin API could not be reached, in words an operator can act on.
fn unreachable(target: &Target, error: &reqwest::Error) -> AdminError {
    let why = if error.is_connect() {
        "nothing answers there (is vantage running, and is this its admin.listen?)"
    } else if error.is_timeout() {
        "no answer in time"
    } else {
        "the request failed"
    };
    AdminError::Unreachable {
        base: target.base.to_string(),
        why,
        detail: crate::error_chain(error),
    }
}

fn bearer(target: &Target, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match &target.token {
        Some(t) => request.bearer_auth(t),
        None => request,
    }
}

/// Sets an override; `action` is force_up, force_down or drain.
pub async fn set(
    target: &Target,
    endpoint: &str,
    action: &str,
    reason: &str,
    duration: &str,
    by: &str,
) -> Result<String, AdminError> {
    let body = Session::new(CLIENT_TIMEOUT)?
        .set_override(target, endpoint, action, reason, duration, by)
        .await?;
    let o = &body["override"];
    Ok(format!(
        "{} {} for {duration}: {} (by {})",
        o["action"].as_str().unwrap_or(action),
        o["endpoint"].as_str().unwrap_or(endpoint),
        o["reason"].as_str().unwrap_or(reason),
        o["by"].as_str().unwrap_or(by)
    ))
}

/// After a write through `primary` succeeded: the same write to the Route53 reconciler of
/// the same file (`beside`), if any. A reconciler that is not running on this host is a note,
/// not an error (the file is shared by hosts that run only a DNS server); any other failure is
/// an error naming it.
pub async fn also_beside<F, Fut>(
    beside: Option<&Target>,
    done: String,
    write: F,
) -> Result<String, AdminError>
where
    F: FnOnce(Target) -> Fut,
    Fut: std::future::Future<Output = Result<String, AdminError>>,
{
    let Some(beside) = beside else {
        return Ok(done);
    };
    match write(beside.clone()).await {
        Ok(_) => Ok(format!(
            "{done}\nalso applied to the Route53 reconciler at {} (route53.admin_listen)",
            beside.base
        )),
        Err(e) if e.is_not_found() => Ok(format!(
            "{done}\nthe Route53 reconciler at {} had none",
            beside.base
        )),
        Err(AdminError::Unreachable { .. }) => Ok(format!(
            "{done}\nnote: no Route53 reconciler answers at {} (route53.admin_listen) on this host; \
             with the file state backend, apply it where the reconciler runs too",
            beside.base
        )),
        Err(e) => Err(AdminError::Setup(format!(
            "{done}, but the Route53 reconciler at {} refused it: {e}",
            beside.base
        ))),
    }
}

pub async fn clear(
    target: &Target,
    endpoint: &str,
    reason: &str,
    by: &str,
) -> Result<String, AdminError> {
    Session::new(CLIENT_TIMEOUT)?
        .clear_override(target, endpoint, reason, by)
        .await?;
    Ok(format!("override on {endpoint} cleared"))
}

/// Asks a running vantage to reload; the error lists every problem found.
pub async fn reload(target: &Target) -> Result<String, AdminError> {
    let request = client()?.post(target.url("v1/reload")?);
    let response = bearer(target, request)
        .send()
        .await
        .map_err(|e| unreachable(target, &e))?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| AdminError::Invalid {
        status,
        detail: e.to_string(),
    })?;
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(format!("reloaded: {}", text(&body["reloaded"])));
    }
    let problems: Vec<String> = body["problems"]
        .as_array()
        .map(|p| p.iter().map(text).collect())
        .unwrap_or_default();
    Err(AdminError::Refused {
        status,
        message: format!(
            "{}{}",
            text(&body["error"]),
            problems
                .iter()
                .map(|p| format!("\n  {p}"))
                .collect::<String>()
        ),
    })
}

pub async fn list(target: &Target, json: bool) -> Result<String, AdminError> {
    let body = Session::new(CLIENT_TIMEOUT)?.overrides(target).await?;
    if json {
        return serde_json::to_string_pretty(&body).map_err(setup);
    }
    let rows: Vec<Vec<String>> = body["overrides"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|o| {
            vec![
                text(&o["endpoint"]),
                text(&o["action"]),
                text(&o["reason"]),
                text(&o["by"]),
                expires_in(&o["expires_unix_ms"]),
            ]
        })
        .collect();
    Ok(table(
        &["ENDPOINT", "ACTION", "REASON", "BY", "EXPIRES IN"],
        &rows,
    ))
}

pub async fn status(target: &Target, json: bool) -> Result<String, AdminError> {
    let body = Session::new(CLIENT_TIMEOUT)?.status(target).await?;
    if json {
        return serde_json::to_string_pretty(&body).map_err(setup);
    }
    Ok(render_status(&body))
}

/// `vantage status --fleet`: every member's status side by side (reachable, ready, quorum,
/// snapshot generation, the answer of each record); the text (or JSON) and whether the DNS
/// servers disagree on some answer.
pub async fn fleet_status(
    members: &[crate::state::members::Member],
    token: Option<String>,
    json: bool,
) -> Result<(String, bool), AdminError> {
    let session = Session::new(std::time::Duration::from_secs(3))?;
    let mut docs = Vec::new();
    for m in members {
        let target = Target {
            base: url::Url::parse(&m.admin).map_err(setup)?,
            token: token.clone(),
        };
        docs.push(session.status(&target).await);
    }
    // Each DNS server's answer per record ("name type" -> answer).
    let answers = |doc: &Value| -> std::collections::BTreeMap<String, String> {
        doc["records"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    format!("{} {}", text(&r["name"]), text(&r["type"])),
                    answer_text(r),
                )
            })
            .collect()
    };
    let mut records: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for (m, doc) in members.iter().zip(&docs) {
        if let (Ok(doc), "dns") = (doc, m.role.as_str()) {
            for (record, answer) in answers(doc) {
                records.entry(record).or_default().insert(answer);
            }
        }
    }
    let disagree: Vec<&String> = records
        .iter()
        .filter(|(_, answers)| answers.len() > 1)
        .map(|(record, _)| record)
        .collect();
    if json {
        let servers: Vec<Value> = members
            .iter()
            .zip(&docs)
            .map(|(m, doc)| match doc {
                Ok(doc) => json!({
                    "name": m.name, "role": m.role, "admin": m.admin, "reachable": true,
                    "ready": doc["ready"], "quorum": doc["quorum"]["state"],
                    "generation": doc["generation"], "answers": answers(doc),
                }),
                Err(e) => json!({"name": m.name, "role": m.role, "admin": m.admin,
                    "reachable": false, "error": e.to_string()}),
            })
            .collect();
        let out = json!({"servers": servers, "disagree": disagree});
        return Ok((out.to_string(), !disagree.is_empty()));
    }
    let record_names: Vec<&String> = records.keys().collect();
    let mut headers: Vec<&str> = vec![
        "SERVER",
        "ROLE",
        "ADMIN",
        "REACHABLE",
        "READY",
        "QUORUM",
        "GENERATION",
    ];
    headers.extend(record_names.iter().map(|r| r.as_str()));
    let rows: Vec<Vec<String>> = members
        .iter()
        .zip(&docs)
        .map(|(m, doc)| {
            let mut row = vec![m.name.clone(), m.role.clone(), m.admin.clone()];
            match doc {
                Ok(doc) => {
                    let mine = answers(doc);
                    row.extend([
                        "yes".into(),
                        text(&doc["ready"]),
                        text(&doc["quorum"]["state"]),
                        text(&doc["generation"]),
                    ]);
                    row.extend(
                        record_names
                            .iter()
                            .map(|r| mine.get(*r).cloned().unwrap_or_default()),
                    );
                }
                Err(e) => {
                    row.push(format!("no: {e}"));
                    row.extend(std::iter::repeat_n(String::new(), 3 + record_names.len()));
                }
            }
            row
        })
        .collect();
    let mut out = table(&headers, &rows);
    if disagree.is_empty() {
        out.push_str(
            "
every DNS server answers the same
",
        );
    } else {
        out.push_str(&format!(
            "
DNS servers disagree on: {}
",
            disagree
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok((out, !disagree.is_empty()))
}

/// A status record's answer as people read it: its addresses, or SERVFAIL.
fn answer_text(record: &Value) -> String {
    if record["state"] == "servfail" {
        "SERVFAIL".to_string()
    } else {
        record["answer"]
            .as_array()
            .map(|a| a.iter().map(text).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn expires_in(v: &Value) -> String {
    let Some(at) = v.as_u64() else {
        return String::new();
    };
    let now = crate::clock::unix_ms();
    let secs = at.saturating_sub(now) / 1000;
    format!("{}m{:02}s", secs / 60, secs % 60)
}

/// Columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.clone()));
        out.push('\n');
    }
    out
}

/// The status document as terminal tables: record -> answer -> why, then the endpoints.
pub fn render_status(doc: &Value) -> String {
    let list = |key: &str| doc[key].as_array().cloned().unwrap_or_default();
    // A Route53 column when this process pushes records to Route53.
    let route53 = list("records").iter().any(|r| r.get("route53").is_some());
    let records: Vec<Vec<String>> = list("records")
        .iter()
        .map(|r| {
            let answer = answer_text(r);
            let mut row = vec![
                format!("{} {}", text(&r["name"]), text(&r["type"])),
                text(&r["policy"]),
                answer,
                text(&r["why"]),
            ];
            if route53 {
                let sync = &r["route53"];
                row.push(match sync["reason"].as_str() {
                    Some(reason) => format!("{}: {reason}", text(&sync["state"])),
                    None => text(&sync["state"]),
                });
            }
            row
        })
        .collect();
    let endpoints: Vec<Vec<String>> = list("endpoints")
        .iter()
        .map(|e| {
            let o = list("overrides")
                .into_iter()
                .find(|o| o["endpoint"] == e["id"]);
            let verdict = match o {
                Some(o) => format!(
                    "{} ({} by override)",
                    text(&e["verdict"]),
                    text(&o["action"])
                ),
                None => text(&e["verdict"]),
            };
            // Each region's vote: "us-east:up eu-west:down ap-south:stale".
            let votes: Vec<String> = e["votes"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|v| {
                    let state = if v["fresh"] == false {
                        "stale".to_string()
                    } else if v["impaired"] == true {
                        format!("{}(impaired)", text(&v["state"]))
                    } else {
                        text(&v["state"])
                    };
                    format!("{}:{state}", text(&v["region"]))
                })
                .collect();
            vec![
                text(&e["id"]),
                text(&e["address"]),
                verdict,
                votes.join(" "),
                text(&e["why"]),
            ]
        })
        .collect();
    let q = &doc["quorum"];
    let mut out = format!(
        "ready: {}   quorum: {} ({} of {} fresh, {} needed)\n\n",
        text(&doc["ready"]),
        text(&q["state"]),
        q["fresh"].as_array().map_or(0, Vec::len),
        q["probers"].as_array().map_or(0, Vec::len),
        text(&q["required"])
    );
    let mut headers = vec!["RECORD", "POLICY", "ANSWER", "WHY"];
    if route53 {
        headers.push("ROUTE53");
    }
    out.push_str(&table(&headers, &records));
    out.push('\n');
    out.push_str(&table(
        &["ENDPOINT", "ADDRESS", "VERDICT", "VOTES", "WHY"],
        &endpoints,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_renders_record_answer_and_why() {
        let doc = json!({
            "ready": true,
            "quorum": {"state": "quorum", "fresh": ["a", "b"], "probers": ["a", "b", "c"], "required": 2},
            "records": [{"name": "www.example.com.", "type": "A", "policy": "failover", "state": "answer",
                         "answer": ["192.0.2.2"], "why": "use1 not Up; failed over to euw1"}],
            "endpoints": [{"id": "use1", "address": "192.0.2.1", "verdict": "down", "why": "3 of 3 probers report Down (status)"}],
            "overrides": [{"endpoint": "use1", "action": "drain"}],
        });
        let text = render_status(&doc);
        assert!(
            text.contains(
                "www.example.com. A  failover  192.0.2.2  use1 not Up; failed over to euw1"
            ),
            "{text}"
        );
        assert!(text.contains("down (drain by override)"), "{text}");
        assert!(
            text.starts_with("ready: true   quorum: quorum (2 of 3 fresh, 2 needed)"),
            "{text}"
        );
    }
}
