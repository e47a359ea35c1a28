//! A webhook's transport: alerts from the spool POSTed (batched or one
//! alert per request, gzip, signed); 2xx is delivered; connection errors,
//! timeouts, 408, 429 (honouring `Retry-After`) and 5xx are retried; other
//! 4xx answers are permanent.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use super::payload::Signer;
use crate::config::{RequestMode, WebhookConfig};
use crate::output::delivery::{Outcome, Transport};
use crate::output::spool::Record;

/// The HTTP client of one webhook: its timeout, headers, CA and client certificate.
pub(super) fn http_client(cfg: &WebhookConfig) -> Result<reqwest::Client, String> {
    crate::output::install_tls_provider();
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (k, v) in &cfg.headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header {k:?}: {e}"))?;
        let value = HeaderValue::from_str(v).map_err(|e| format!("header {k:?}: {e}"))?;
        headers.insert(name, value);
    }
    let mut b = reqwest::Client::builder()
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")))
        .default_headers(headers)
        .pool_idle_timeout(Duration::from_secs(60));
    if let Some(ca) = &cfg.ca_cert {
        let pem = std::fs::read(ca).map_err(|e| format!("cannot read ca_cert {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("ca_cert {}: not PEM certificates: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("ca_cert {}: no certificate in it", ca.display()));
        }
        b = b.tls_certs_only(certs);
    }
    if let (Some(cert), Some(key)) = (&cfg.client_cert, &cfg.client_key) {
        let mut pem = std::fs::read(cert).map_err(|e| format!("cannot read client_cert {}: {e}", cert.display()))?;
        pem.push(b'\n');
        pem.extend(std::fs::read(key).map_err(|e| format!("cannot read client_key {}: {e}", key.display()))?);
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| format!("client_cert/client_key: {e}"))?;
        b = b.identity(id);
    }
    b.build().map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Posts to one webhook.
pub(super) struct Http {
    pub(super) url: String,
    pub(super) mode: RequestMode,
    pub(super) gzip: bool,
    pub(super) client: reqwest::Client,
    pub(super) signer: Option<Signer>,
}

impl Transport for Http {
    async fn send(&self, records: &[Record]) -> Outcome {
        let mut body = super::payload::body(records.iter().map(|r| r.bytes.as_ref()), self.mode);
        let mut req = self.client.post(&self.url).header("x-vigil-alerts", records.len());
        if self.gzip {
            body = super::payload::gzip(&body);
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        if let Some(s) = &self.signer {
            req = req.header(super::payload::SIGNATURE_HEADER, s.sign(&body));
        }
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            // Without the URL: its query string and userinfo may hold secrets.
            Err(e) => return Outcome::Retry { why: crate::error_chain(&e.without_url()), after: None },
        };
        let status = resp.status();
        if status.is_success() {
            return Outcome::Delivered;
        }
        let after = resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let text = resp.text().await.unwrap_or_default();
        // The receiver's text, cut and escaped: it goes into the daemon's log.
        let body: String = crate::escape_controls(&text.chars().take(512).collect::<String>()).into_owned();
        if status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
        {
            Outcome::Retry { why: format!("HTTP {status}: {body}"), after }
        } else {
            Outcome::Rejected(format!("HTTP {status} (a 4xx other than 408 and 429 is permanent): {body}"))
        }
    }
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v.trim()).ok()?;
    Some(when.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// The URL without its credentials or query, for logs.
pub(crate) fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "<invalid>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120), "{d:?}");
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn urls_in_logs_lose_their_secrets() {
        assert_eq!(redacted_url("https://u:pw@h.example/x?token=1"), "https://u@h.example/x");
    }
}
