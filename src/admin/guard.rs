//! What the admin listener refuses before any route sees a request: requests addressed to a
//! host name it does not have (a page using DNS rebinding to read it), writes a browser sends
//! on behalf of another site (cross-site request forgery), and reads without the read token
//! when one is configured.

use axum::{
    extract::{Request, State},
    http::{Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::AdminState;

/// Paths open to anyone who reaches the listener (liveness and readiness probes).
const OPEN: [&str; 2] = ["/livez", "/readyz"];

pub async fn guard(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if OPEN.contains(&path) {
        return next.run(request).await;
    }
    let settings = state.settings.load();
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(host_name);
    if let Some(host) = &host
        && !allowed_host(host, &settings.admin.hosts)
    {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this admin API does not answer to the name {host:?}; use its address, or add the name to admin.hosts\n"
            ),
        )
            .into_response();
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) && cross_site(headers) {
        return (
            StatusCode::FORBIDDEN,
            "cross-site request refused: the admin API takes writes only from its own pages and tools\n",
        )
            .into_response();
    }
    // The status page itself holds no data; what it shows comes from /v1/status.
    if let Some(read) = &settings.admin.read_token
        && path != "/"
    {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("")
            .as_bytes();
        let matches = |secret: &crate::config::Secret| {
            aws_lc_rs::constant_time::verify_slices_are_equal(presented, secret.bytes()).is_ok()
        };
        // Writes check the admin token in their handlers.
        let write = !matches!(*request.method(), Method::GET | Method::HEAD);
        if !write && !matches(read) && !settings.admin.token.as_ref().is_some_and(matches) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "reading needs the read token (admin.read_token_file) or the admin token: Authorization: Bearer ...\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// The host of a Host header value, lower case, without port or brackets.
fn host_name(value: &str) -> String {
    let value = value.trim();
    let host = if let Some(rest) = value.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        value.rsplit_once(':').map_or(value, |(h, _)| h)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// IP addresses and `localhost` cannot be rebound to another site; names must be configured.
fn allowed_host(host: &str, configured: &[String]) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
        || host == "localhost"
        || configured.iter().any(|c| c == host)
}

/// A browser says where a request comes from: `Sec-Fetch-Site` (every current browser) or an
/// `Origin` that is not this server. Tools (curl, vantage) send neither.
fn cross_site(headers: &axum::http::HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !matches!(site, "same-origin" | "none");
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => false,
        Some("null") => true,
        Some(origin) => url::Url::parse(origin).ok().is_none_or(|o| {
            let origin_host = match (o.host_str(), o.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_string(),
                _ => return true,
            };
            host.is_none_or(|h| !h.eq_ignore_ascii_case(&origin_host))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_localhost_and_configured_names_are_answered() {
        let configured = vec!["vantage-1.example.net".to_string()];
        for (value, ok) in [
            ("127.0.0.1:8053", true),
            ("[::1]:8053", true),
            ("[2001:db8::1]", true),
            ("localhost:8053", true),
            ("LOCALHOST", true),
            ("vantage-1.example.net:8053", true),
            ("Vantage-1.Example.NET.", true),
            ("evil.example:8053", false),
            ("127.0.0.1.evil.example", false),
        ] {
            assert_eq!(allowed_host(&host_name(value), &configured), ok, "{value}");
        }
    }

    #[test]
    fn browsers_cross_site_writes_are_recognised() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = axum::http::HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().expect("value"));
            }
            h
        };
        assert!(!cross_site(&headers(&[("host", "127.0.0.1:8053")])));
        assert!(!cross_site(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(!cross_site(&headers(&[
            ("host", "127.0.0.1:8053"),
            ("origin", "http://127.0.0.1:8053")
        ])));
        assert!(cross_site(&headers(&[
            ("host", "127.0.0.1:8053"),
            ("origin", "http://evil.example")
        ])));
        assert!(cross_site(&headers(&[("origin", "null")])));
    }
}
