//! Alert shaping, between the rules and every output: redaction of secrets,
//! folding of identical alerts within a window, and rate limits (per rule
//! and global token buckets). Nothing is dropped silently: every alert held
//! back is counted ([`ShapingStats`], in the metrics), rate-limit drops are
//! logged, and folded alerts are summed into the next one ("and N similar").

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use regex::{Regex, RegexSet};
use serde_json::Value;

use crate::alert::Alert;
use crate::config::AlertsConfig;

/// What shaping held back or changed.
#[derive(Debug, Default)]
pub struct ShapingStats {
    pub rate_limited_rule: AtomicU64,
    pub rate_limited_global: AtomicU64,
    pub deduplicated: AtomicU64,
    /// Alerts in which something was redacted.
    pub redacted: AtomicU64,
}

/// The output field carrying how many identical alerts were folded into this one.
pub const SIMILAR_FIELD: &str = "vigil.similar";

/// Fields that differ between otherwise identical alerts.
const PER_EVENT_FIELDS: [&str; 6] = ["evt.time", "evt.num", "proc.pid", "proc.tid", "proc.ppid", SIMILAR_FIELD];

/// How often rate-limit drops are logged (at most).
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

pub struct Shaper {
    redactor: Redactor,
    rule_quota: Option<Quota>,
    /// One bucket per rule and container (the host counts as one): a noisy
    /// container cannot use up the bucket another container's alerts need.
    rule_limits: HashMap<Source, (DefaultDirectRateLimiter, Instant)>,
    global: Option<DefaultDirectRateLimiter>,
    window: Duration,
    /// By [`fingerprint`] (which covers the rule).
    folds: HashMap<u64, Fold>,
    /// Rate-limit drops since the last log line, by rule and container.
    unlogged_drops: HashMap<Source, u64>,
    last_drop_log: Instant,
    stats: Arc<ShapingStats>,
}

/// Where alerts come from, for rate limits: the rule, and the container
/// (`host` for the host's own processes).
type Source = (String, String);

/// Buckets kept at most; past it, those unused for a minute go.
const MAX_BUCKETS: usize = 16_384;

/// The rule and container an alert is limited by.
fn source_of(a: &Alert) -> Source {
    let container = match a.output_fields.get("container.id") {
        // By id (a container cannot take another's bucket by its name), named for the log.
        Some(serde_json::Value::String(id)) if !id.is_empty() && id != "host" => {
            let name = a.output_fields.get("container.name").and_then(|n| n.as_str()).unwrap_or("");
            let id: String = id.chars().take(12).collect();
            if name.is_empty() { id } else { format!("{name}/{id}") }
        }
        _ => "host".to_string(),
    };
    (a.rule.clone(), container)
}

struct Fold {
    until: Instant,
    folded: u64,
    /// The most recent folded alert, sent with the count if no other comes.
    last: Option<Alert>,
}

fn quota(rate: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    Some(Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(rate)))
}

impl Shaper {
    /// `config` is validated (its patterns compile).
    pub fn new(config: &AlertsConfig) -> Self {
        Shaper {
            redactor: Redactor::new(&config.redact).expect("validated patterns"),
            rule_quota: quota(config.rule_rate, config.rule_burst),
            rule_limits: HashMap::new(),
            global: quota(config.global_rate, config.global_burst).map(RateLimiter::direct),
            window: config.dedup_window,
            folds: HashMap::new(),
            unlogged_drops: HashMap::new(),
            last_drop_log: Instant::now(),
            stats: Arc::new(ShapingStats::default()),
        }
    }

    /// Passes everything through unchanged.
    pub fn passthrough() -> Self {
        Self::new(&AlertsConfig {
            rule_rate: 0,
            rule_burst: 0,
            global_rate: 0,
            global_burst: 0,
            dedup_window: Duration::ZERO,
            redact: Vec::new(),
        })
    }

    pub fn stats(&self) -> Arc<ShapingStats> {
        self.stats.clone()
    }

    /// The alerts that go out, in order.
    pub fn shape(&mut self, alerts: Vec<Alert>, now: Instant) -> Vec<Alert> {
        let mut out = Vec::with_capacity(alerts.len());
        for mut a in alerts {
            if self.redactor.redact(&mut a) {
                self.stats.redacted.fetch_add(1, Ordering::Relaxed);
            }
            if !self.window.is_zero() {
                let key = fingerprint(&a);
                match self.folds.get_mut(&key) {
                    Some(f) if now < f.until => {
                        f.folded += 1;
                        f.last = Some(a);
                        self.stats.deduplicated.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Some(f) => {
                        // The window ended and this one starts the next: it carries the count.
                        mark_similar(&mut a, f.folded);
                        *f = Fold { until: now + self.window, folded: 0, last: None };
                    }
                    None => {
                        self.folds.insert(key, Fold { until: now + self.window, folded: 0, last: None });
                    }
                }
            }
            if !self.admit(&a, now) {
                continue;
            }
            out.push(a);
        }
        out
    }

    /// Whether `a` fits the rate limits (its rule and container's bucket,
    /// then the global one); without limits, nothing is looked at.
    fn admit(&mut self, a: &Alert, now: Instant) -> bool {
        if self.rule_quota.is_none() && self.global.is_none() {
            return true;
        }
        let source = source_of(a);
        if let Some(q) = self.rule_quota {
            if self.rule_limits.len() >= MAX_BUCKETS && !self.rule_limits.contains_key(&source) {
                self.rule_limits.retain(|_, (_, used)| now.saturating_duration_since(*used) < Duration::from_secs(60));
            }
            let (limiter, used) =
                self.rule_limits.entry(source.clone()).or_insert_with(|| (RateLimiter::direct(q), now));
            *used = now;
            if limiter.check().is_err() {
                self.stats.rate_limited_rule.fetch_add(1, Ordering::Relaxed);
                *self.unlogged_drops.entry(source).or_default() += 1;
                return false;
            }
        }
        if let Some(g) = &self.global
            && g.check().is_err()
        {
            self.stats.rate_limited_global.fetch_add(1, Ordering::Relaxed);
            *self.unlogged_drops.entry(source).or_default() += 1;
            return false;
        }
        true
    }

    /// Called periodically: ends windows whose folded alerts have not been
    /// reported yet (their last alert goes out with the count) and logs
    /// rate-limit drops.
    pub fn tick(&mut self, now: Instant) -> Vec<Alert> {
        let mut out = Vec::new();
        self.folds.retain(|_, f| {
            if now < f.until {
                return true;
            }
            if let Some(mut last) = f.last.take() {
                mark_similar(&mut last, f.folded - 1);
                out.push(last);
            }
            false
        });
        if !self.unlogged_drops.is_empty() && now.duration_since(self.last_drop_log) >= DROP_LOG_INTERVAL {
            self.log_drops(now);
        }
        out.sort_by(|a, b| a.time.cmp(&b.time));
        out
    }

    /// At shutdown: every fold ends now.
    pub fn finish(&mut self) -> Vec<Alert> {
        let far = Instant::now() + self.window + Duration::from_secs(3600);
        let out = self.tick(far);
        if !self.unlogged_drops.is_empty() {
            self.log_drops(Instant::now());
        }
        out
    }

    fn log_drops(&mut self, now: Instant) {
        let total: u64 = self.unlogged_drops.values().sum();
        let mut by_source: Vec<String> =
            self.unlogged_drops.drain().map(|((rule, container), n)| format!("{rule}@{container}={n}")).collect();
        by_source.sort();
        tracing::warn!(dropped = total, by_rule_and_container = %by_source.join(","), "alerts over the rate limit dropped (alerts.rule_rate / alerts.global_rate)");
        self.last_drop_log = now;
    }
}

fn mark_similar(a: &mut Alert, n: u64) {
    if n == 0 {
        return;
    }
    a.output.push_str(&format!(" (and {n} similar)"));
    a.output_fields.insert(SIMILAR_FIELD.into(), n.into());
}

/// Hash of what makes two alerts "identical".
fn fingerprint(a: &Alert) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    a.rule.hash(&mut h);
    a.priority.hash(&mut h);
    a.output.hash(&mut h);
    for (k, v) in &a.output_fields {
        if !PER_EVENT_FIELDS.contains(&k.as_str()) {
            k.hash(&mut h);
            hash_value(v, &mut h);
        }
    }
    h.finish()
}

fn hash_value(v: &Value, h: &mut impl Hasher) {
    match v {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => b.hash(h),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u.hash(h),
            (None, Some(i)) => i.hash(h),
            (None, None) => n.as_f64().map(f64::to_bits).hash(h),
        },
        Value::String(s) => s.hash(h),
        Value::Array(items) => {
            items.len().hash(h);
            for i in items {
                hash_value(i, h);
            }
        }
        Value::Object(m) => {
            for (k, v) in m {
                k.hash(h);
                hash_value(v, h);
            }
        }
    }
}

/// Replaces configured patterns in an alert's message and string fields.
pub struct Redactor {
    set: RegexSet,
    patterns: Vec<Regex>,
}

pub const REDACTED: &str = "<redacted>";

impl Redactor {
    pub fn new(patterns: &[String]) -> Result<Self, regex::Error> {
        Ok(Redactor {
            set: RegexSet::new(patterns)?,
            patterns: patterns.iter().map(|p| Regex::new(p)).collect::<Result<_, _>>()?,
        })
    }

    /// The redacted text, if anything matched.
    pub fn redact_str(&self, s: &str) -> Option<String> {
        let matched = self.set.matches(s);
        if !matched.matched_any() {
            return None;
        }
        let mut text = s.to_string();
        for i in matched.iter() {
            let re = &self.patterns[i];
            let mut out = String::with_capacity(text.len());
            let mut at = 0;
            for caps in re.captures_iter(&text) {
                // Only the first capture group when there is one, else the whole match.
                let Some(m) = caps.get(1).or_else(|| caps.get(0)) else { continue };
                out.push_str(&text[at..m.start()]);
                out.push_str(REDACTED);
                at = m.end();
            }
            out.push_str(&text[at..]);
            text = out;
        }
        Some(text)
    }

    /// Redacts in place; true if anything changed.
    pub fn redact(&self, a: &mut Alert) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        let mut changed = false;
        if let Some(s) = self.redact_str(&a.output) {
            a.output = s;
            changed = true;
        }
        for v in a.output_fields.values_mut() {
            changed |= self.redact_value(v);
        }
        changed
    }

    fn redact_value(&self, v: &mut Value) -> bool {
        match v {
            Value::String(s) => match self.redact_str(s) {
                Some(r) => {
                    *s = r;
                    true
                }
                None => false,
            },
            Value::Array(items) => items.iter_mut().fold(false, |c, i| self.redact_value(i) | c),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::alert::Priority;
    use crate::config::default_redactions;

    fn alert(rule: &str, cmdline: &str, pid: u64) -> Alert {
        let mut f = BTreeMap::new();
        f.insert("proc.cmdline".to_string(), Value::from(cmdline));
        f.insert("proc.pid".to_string(), Value::from(pid));
        Alert {
            id: format!("id-{pid}"),
            time: format!("2026-11-24T00:00:{:02}.000000000Z", pid % 60),
            rule: rule.into(),
            rule_version: "1".into(),
            priority: Priority::Warning,
            output: format!("ran {cmdline}"),
            source: "syscall".into(),
            hostname: "h".into(),
            tags: vec![],
            output_fields: f,
        }
    }

    fn config(window_ms: u64, rule_rate: u32, rule_burst: u32) -> AlertsConfig {
        AlertsConfig {
            rule_rate,
            rule_burst,
            global_rate: 0,
            global_burst: 0,
            dedup_window: Duration::from_millis(window_ms),
            redact: default_redactions(),
        }
    }

    #[test]
    fn redacts_common_secrets_and_keeps_the_rest() {
        let r = Redactor::new(&default_redactions()).unwrap();
        let cases = [
            ("mysql --password hunter2 -h db", "mysql --password <redacted> -h db"),
            ("curl https://bob:s3cret@example.com/x", "curl https://bob:<redacted>@example.com/x"),
            ("app token=abc123&x=1", "app token=<redacted>&x=1"),
            ("curl -H Authorization: Bearer eyJhbGc.x-y", "curl -H Authorization: Bearer <redacted>"),
            ("API_KEY=zzz ./run", "API_KEY=<redacted> ./run"),
        ];
        for (input, want) in cases {
            assert_eq!(r.redact_str(input).as_deref(), Some(want), "{input}");
        }
        assert_eq!(r.redact_str("ls -la /etc"), None);
        let mut a = alert("r", "mysql -u root --password=hunter2", 1);
        assert!(r.redact(&mut a));
        assert!(
            !a.output.contains("hunter2") && !a.output_fields["proc.cmdline"].as_str().unwrap().contains("hunter2")
        );
    }

    #[test]
    fn identical_alerts_fold_into_the_next_one() {
        let mut s = Shaper::new(&config(1000, 0, 0));
        let t0 = Instant::now();
        let first = s.shape(vec![alert("r", "nc -e sh", 1), alert("r", "nc -e sh", 2), alert("r", "nc -e sh", 3)], t0);
        assert_eq!(first.len(), 1, "pids differ, the rest is identical");
        // Different command line: not identical.
        assert_eq!(s.shape(vec![alert("r", "nc -e bash", 4)], t0).len(), 1);
        assert_eq!(s.stats.deduplicated.load(Ordering::Relaxed), 2);
        // After the window, the next identical alert carries the count.
        let next = s.shape(vec![alert("r", "nc -e sh", 5)], t0 + Duration::from_secs(2));
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].output_fields[SIMILAR_FIELD], 2);
        assert!(next[0].output.ends_with("(and 2 similar)"), "{}", next[0].output);
    }

    #[test]
    fn a_window_that_ends_quietly_reports_its_count() {
        let mut s = Shaper::new(&config(1000, 0, 0));
        let t0 = Instant::now();
        let _ = s.shape((1..=4).map(|p| alert("r", "nc -e sh", p)).collect(), t0);
        assert!(s.tick(t0 + Duration::from_millis(500)).is_empty());
        let late = s.tick(t0 + Duration::from_secs(2));
        assert_eq!(late.len(), 1);
        // The last folded alert goes out, with the 2 others before it.
        assert_eq!(late[0].id, "id-4");
        assert_eq!(late[0].output_fields[SIMILAR_FIELD], 2);
        assert!(s.tick(t0 + Duration::from_secs(3)).is_empty());
    }

    #[test]
    fn rate_limit_per_rule_counts_what_it_drops() {
        let mut s = Shaper::new(&config(0, 1, 5));
        let t0 = Instant::now();
        let out = s.shape((0..20).map(|p| alert("noisy", &format!("x {p}"), p)).collect(), t0);
        assert_eq!(out.len(), 5, "the burst passes");
        assert_eq!(s.stats.rate_limited_rule.load(Ordering::Relaxed), 15);
        // Another rule has its own bucket.
        assert_eq!(s.shape(vec![alert("quiet", "y", 1)], t0).len(), 1);
    }

    #[test]
    fn one_noisy_container_does_not_use_up_the_bucket_of_another() {
        let mut s = Shaper::new(&config(0, 1, 5));
        let t0 = Instant::now();
        let in_container = |name: &str, p: u64| {
            let mut a = alert("shell", &format!("sh {p}"), p);
            a.output_fields.insert("container.id".into(), format!("{:0>12}", name.len()).into());
            a.output_fields.insert("container.name".into(), name.into());
            a
        };
        let noisy = s.shape((0..5000).map(|p| in_container("ci-runner", p)).collect(), t0);
        assert_eq!(noisy.len(), 5, "the noisy container gets its burst");
        // The one shell in the production container still goes out, and so does the host's.
        assert_eq!(s.shape(vec![in_container("payments", 1)], t0).len(), 1);
        assert_eq!(s.shape(vec![alert("shell", "host sh", 2)], t0).len(), 1);
        assert_eq!(s.stats.rate_limited_rule.load(Ordering::Relaxed), 4995);
        assert_eq!(s.unlogged_drops.get(&("shell".to_string(), "ci-runner/000000000009".to_string())), Some(&4995));
        // A container named like another is still limited by its own id.
        let impostor = s.shape(
            (0..100)
                .map(|p| {
                    let mut a = in_container("payments", p);
                    a.output_fields.insert("container.id".into(), "bbbbbbbbbbbb".into());
                    a
                })
                .collect(),
            t0,
        );
        assert_eq!(impostor.len(), 5);
        assert_eq!(s.shape(vec![in_container("payments", 2)], t0).len(), 1, "the real one still has its bucket");
    }

    #[test]
    fn passthrough_changes_nothing() {
        let mut s = Shaper::passthrough();
        let alerts: Vec<Alert> = (0..100).map(|p| alert("r", "--password x", p)).collect();
        assert_eq!(s.shape(alerts.clone(), Instant::now()), alerts);
    }
}
