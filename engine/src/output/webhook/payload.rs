//! What a webhook request carries: each alert encoded once, when spooled
//! (Vigil's JSON or Falco's), then joined into a body (a JSON array, or one
//! alert), gzipped if asked, and signed.

use std::collections::BTreeMap;
use std::io::Write;

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;

use crate::alert::{Alert, Priority};
use crate::config::{PayloadFormat, RequestMode};
use crate::output::fields::FieldSelection;

/// The request header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "x-vigil-signature";

/// Falco's JSON alert, as falcosidekick reads it (`uuid` is its name for
/// the alert's unique id).
#[derive(Serialize)]
struct FalcoAlert<'a, F: Serialize> {
    uuid: &'a str,
    output: &'a str,
    priority: Priority,
    rule: &'a str,
    time: &'a str,
    output_fields: F,
    source: &'a str,
    tags: &'a [String],
    hostname: &'a str,
}

/// Vigil's alert with a selection of its fields.
#[derive(Serialize)]
struct VigilAlert<'a> {
    id: &'a str,
    time: &'a str,
    rule: &'a str,
    rule_version: &'a str,
    priority: Priority,
    output: &'a str,
    source: &'a str,
    hostname: &'a str,
    tags: &'a [String],
    output_fields: BTreeMap<&'a str, &'a Value>,
}

/// One alert, as it is spooled and sent.
pub fn encode(alert: &Alert, format: PayloadFormat, fields: &FieldSelection) -> Vec<u8> {
    let out = match (format, fields.is_all()) {
        (PayloadFormat::Vigil, true) => serde_json::to_vec(alert),
        (PayloadFormat::Vigil, false) => serde_json::to_vec(&VigilAlert {
            id: &alert.id,
            time: &alert.time,
            rule: &alert.rule,
            rule_version: &alert.rule_version,
            priority: alert.priority,
            output: &alert.output,
            source: &alert.source,
            hostname: &alert.hostname,
            tags: &alert.tags,
            output_fields: fields.apply(&alert.output_fields),
        }),
        (PayloadFormat::Falco, _) => serde_json::to_vec(&FalcoAlert {
            uuid: &alert.id,
            output: &alert.output,
            priority: alert.priority,
            rule: &alert.rule,
            time: &alert.time,
            output_fields: fields.apply(&alert.output_fields),
            source: &alert.source,
            tags: &alert.tags,
            hostname: &alert.hostname,
        }),
    };
    out.expect("alerts serialize")
}

/// The request body for `records` (one record in `single` mode).
pub fn body<'a>(records: impl ExactSizeIterator<Item = &'a [u8]>, mode: RequestMode) -> Vec<u8> {
    match mode {
        RequestMode::Single => records.into_iter().next().map(<[u8]>::to_vec).unwrap_or_default(),
        RequestMode::Batch => {
            let mut b = Vec::with_capacity(records.len() * 600 + 2);
            b.push(b'[');
            for (i, r) in records.enumerate() {
                if i > 0 {
                    b.push(b',');
                }
                b.extend_from_slice(r);
            }
            b.push(b']');
            b
        }
    }
}

pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
    enc.write_all(body).expect("writing to memory");
    enc.finish().expect("writing to memory")
}

/// Signs bodies with HMAC-SHA256.
#[derive(Clone)]
pub struct Signer(Hmac<Sha256>);

impl Signer {
    pub fn new(secret: &[u8]) -> Self {
        Signer(Hmac::new_from_slice(secret).expect("HMAC takes keys of any length"))
    }

    /// `sha256=<hex>`, over the body exactly as sent (after gzip).
    pub fn sign(&self, body: &[u8]) -> String {
        let mut mac = self.0.clone();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_is_a_json_array_and_single_is_one_alert() {
        let recs: Vec<&[u8]> = vec![br#"{"a":1}"#, br#"{"b":2}"#];
        let b = body(recs.iter().copied(), RequestMode::Batch);
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(body(recs[..1].iter().copied(), RequestMode::Single), br#"{"a":1}"#);
    }

    #[test]
    fn signature_is_the_rfc_4231_hmac() {
        // RFC 4231, test case 2.
        let s = Signer::new(b"Jefe");
        assert_eq!(
            s.sign(b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let data = b"[{\"x\":1}]".repeat(100);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gzip(&data)[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
    }
}
