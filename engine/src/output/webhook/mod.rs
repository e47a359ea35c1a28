//! Webhook outputs: alerts POSTed as JSON, delivered at least once through
//! the output's spool (see [`crate::output::spooled`]).
//!
//! Requests are batched (or one alert per request, as falcosidekick's `/`
//! takes them), gzipped and signed if asked. Connection errors, timeouts,
//! 408, 429 (honouring `Retry-After`) and 5xx are retried with exponential
//! backoff and jitter, for as long as it takes; other 4xx answers are
//! permanent: logged with the response body, counted, and not retried.

mod delivery;
pub(crate) mod payload;

use std::path::Path;

pub(crate) use delivery::redacted_url;
use delivery::{Http, http_client};

use super::OutputError;
use super::spooled::{Spooled, SpooledOutput};
use crate::config::{RequestMode, WebhookConfig};
use payload::Signer;

/// Opens the webhook's spool and starts delivering (alerts left from an
/// earlier run go first). `runtime` runs the delivery task.
pub fn open(
    cfg: &WebhookConfig,
    spool_dir: &Path,
    hostname: &str,
    runtime: tokio::runtime::Handle,
) -> Result<SpooledOutput, OutputError> {
    let setup = |message: String| OutputError::Setup { output: format!("webhook:{}", cfg.name), message };
    let client = http_client(cfg).map_err(setup)?;
    let signer = match (&cfg.hmac_secret, &cfg.hmac_secret_file) {
        (Some(s), _) => Some(Signer::new(s.as_bytes())),
        (None, Some(p)) => {
            let s = std::fs::read_to_string(p)
                .map_err(|e| setup(format!("cannot read hmac_secret_file {}: {e}", p.display())))?;
            Some(Signer::new(s.trim_end_matches(['\n', '\r']).as_bytes()))
        }
        (None, None) => None,
    };
    let single = cfg.mode == RequestMode::Single;
    let spooled = Spooled {
        kind: "webhook",
        name: &cfg.name,
        format: cfg.format,
        fields: &cfg.fields,
        min_priority: cfg.min_priority,
        spool_max_bytes: cfg.spool_max_bytes.as_u64(),
        max_alerts: if single { 1 } else { cfg.max_alerts },
        max_bytes: if single { u64::MAX } else { cfg.max_bytes.as_u64() },
        max_delay: cfg.max_delay,
        retry_initial: cfg.retry_initial,
        retry_max: cfg.retry_max,
        drain_timeout: cfg.drain_timeout,
        heads: false,
    };
    let transport = Http { url: cfg.url.clone(), mode: cfg.mode, gzip: cfg.gzip, client, signer };
    let output = SpooledOutput::start(&spooled, transport, spool_dir, hostname, runtime)?;
    tracing::info!(output = %format!("webhook:{}", cfg.name), url = %redacted_url(&cfg.url), format = ?cfg.format, mode = ?cfg.mode, spooled = output.spooled(), "webhook output ready");
    Ok(output)
}
