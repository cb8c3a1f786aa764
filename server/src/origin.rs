//! Same-origin rules, for every route: the `Host` header must name this
//! server (which defeats DNS rebinding: a hostile name resolving to this
//! address arrives with its own name), and a mutation sent by a browser must
//! come from a page of this server (`Origin`, else `Referer`), so a page on
//! another site cannot post jobs with the operator's browser.
//!
//! Accepted hosts: any IP literal (a rebinding attack always uses a name),
//! `localhost`, this machine's host name, and `TILEPIPE_ALLOWED_HOSTS`
//! (`*` accepts any). Ports are not compared: proxies change them.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::Config;
use crate::error::{AppError, ErrorCode};

/// The names this server answers to.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    any: bool,
    /// `localhost` and this machine's name.
    own: Vec<String>,
    /// Configured names, e.g. a reverse proxy's public name; pages served
    /// under them may also send mutations.
    extra: Vec<String>,
}

impl AllowedHosts {
    /// `localhost`, `machine` (this host's name) and `extra` (names, or `*`
    /// for any).
    pub fn new(machine: &str, extra: &[String]) -> Self {
        let clean = |n: &str| n.trim().trim_end_matches('.').to_ascii_lowercase();
        let own = ["localhost", machine].iter().map(|n| clean(n)).filter(|n| !n.is_empty()).collect();
        let extra: Vec<String> = extra.iter().map(|n| clean(n)).filter(|n| !n.is_empty()).collect();
        Self { any: extra.iter().any(|n| n == "*"), own, extra }
    }

    /// Whether `authority` (`host[:port]`, as in a `Host` header) is this server.
    pub fn allows(&self, authority: &str) -> bool {
        let Some(host) = hostname(authority) else { return false };
        self.any || host.parse::<std::net::IpAddr>().is_ok() || self.own.contains(&host) || self.extra.contains(&host)
    }
}

/// The host of an authority, lower-cased, without port, brackets or a
/// trailing dot; `None` if it is not a plausible host.
fn hostname(authority: &str) -> Option<String> {
    let authority = authority.trim();
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split_once(']')?.0
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, port)| if port.parse::<u16>().is_ok() { h } else { "" })
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c))).then_some(host)
}

/// The `host[:port]` of an `Origin` or `Referer` URL.
fn url_authority(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    // No credentials in an origin.
    Some(authority.rsplit_once('@').map_or(authority, |(_, a)| a))
}

/// Whether a request's page, if a browser named one, is this server's.
fn same_origin(headers: &HeaderMap, host: &str, allowed: &AllowedHosts) -> bool {
    let page = headers.get(header::ORIGIN).or_else(|| headers.get(header::REFERER));
    let Some(page) = page else {
        return true; // not a browser (curl, the CLI, scripts): nothing to forge
    };
    let Some(authority) = page.to_str().ok().and_then(url_authority) else {
        return false; // `Origin: null` (sandboxed frames, files) or garbage
    };
    let Some(page_host) = hostname(authority) else { return false };
    let same = Some(&page_host) == hostname(host).as_ref() && authority_port(authority) == authority_port(host);
    same || allowed.any || allowed.extra.contains(&page_host)
}

/// The explicit port of an authority, if any.
fn authority_port(authority: &str) -> Option<&str> {
    let after_host = authority.rsplit_once(']').map_or(authority, |(_, rest)| rest);
    after_host.rsplit_once(':').map(|(_, port)| port)
}

pub async fn check(
    State(allowed): State<Arc<AllowedHosts>>,
    State(config): State<Arc<Config>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or("")
        .to_owned();
    if !allowed.allows(&host) {
        let shown: String = host.chars().take(100).collect();
        crate::http::drain(request, config.max_upload_bytes).await;
        return AppError::client(
            StatusCode::MISDIRECTED_REQUEST,
            ErrorCode::UnknownHost,
            format!("this server does not answer to the host {shown:?}; add it to TILEPIPE_ALLOWED_HOSTS"),
        )
        .into_response();
    }
    let mutating = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if mutating && !same_origin(request.headers(), &host, &allowed) {
        crate::http::drain(request, config.max_upload_bytes).await;
        return AppError::client(
            StatusCode::FORBIDDEN,
            ErrorCode::CrossOrigin,
            "requests that change something must come from this server's own pages",
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> AllowedHosts {
        AllowedHosts::new("render-01", &["tiles.example.com".into()])
    }

    #[test]
    fn hosts_are_ip_literals_or_known_names() {
        let a = allowed();
        for ok in ["127.0.0.1:3000", "localhost:3000", "LOCALHOST", "[::1]:3000", "10.0.0.7", "render-01:80"] {
            assert!(a.allows(ok), "{ok}");
        }
        for ok in ["tiles.example.com", "tiles.example.com.:443"] {
            assert!(a.allows(ok), "{ok}");
        }
        for bad in ["evil.example", "evil.example:3000", "localhost.evil.example", "", "a b", "x:notaport"] {
            assert!(!a.allows(bad), "{bad}");
        }
        assert!(AllowedHosts::new("m", &["*".into()]).allows("evil.example"));
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (k.clone(), v.parse().unwrap())).collect()
    }

    #[test]
    fn mutations_must_come_from_this_servers_pages() {
        let a = allowed();
        let host = "127.0.0.1:3000";
        assert!(same_origin(&headers(&[]), host, &a), "no Origin: not a browser");
        assert!(same_origin(&headers(&[(header::ORIGIN, "http://127.0.0.1:3000")]), host, &a));
        assert!(same_origin(&headers(&[(header::REFERER, "http://127.0.0.1:3000/jobs/x?y")]), host, &a));
        assert!(same_origin(&headers(&[(header::ORIGIN, "https://tiles.example.com")]), host, &a));
        for bad in ["http://evil.example", "null", "http://127.0.0.1:3001", "http://localhost:3000", "garbage"] {
            assert!(!same_origin(&headers(&[(header::ORIGIN, bad)]), host, &a), "{bad}");
        }
        assert!(!same_origin(&headers(&[(header::REFERER, "http://evil.example/page")]), host, &a));
        // Origin wins over Referer.
        let both = headers(&[(header::ORIGIN, "http://evil.example"), (header::REFERER, "http://127.0.0.1:3000/")]);
        assert!(!same_origin(&both, host, &a));
    }
}
