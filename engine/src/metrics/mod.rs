//! The daemon's own figures, in Prometheus' text format, and its health.
//!
//! Every stage keeps its figures in atomics of its own (the dispatcher,
//! each rule, each output, shaping); [`Telemetry`] holds handles to them,
//! and a scrape reads them into a fresh registry. Nothing on the hot path
//! touches a metrics library.
//!
//! - [`server`]: `/metrics`, `/healthz` and `/readyz` over HTTP (axum).

pub(crate) mod server;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::core::Collector;
use prometheus::{CounterVec, Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use vigil_event::EventKind;
use vigil_rulelang::Status;

use crate::output::OutputStats;
use crate::output::shaping::ShapingStats;
use crate::output::spooled::SpooledHandle;
use crate::plugin::dispatch::{DispatchStats, RuleRegistry};
use crate::sources::ebpf::EbpfStatsHandle;
use crate::watchers::RuntimeStatus;

/// Handles to every stage's figures, filled in as the stages start.
#[derive(Default)]
pub struct Telemetry {
    ready: AtomicBool,
    parts: Mutex<Parts>,
}

#[derive(Default)]
struct Parts {
    source: String,
    dispatch: Option<Arc<DispatchStats>>,
    rules: Option<RuleRegistry>,
    outputs: Vec<(String, Arc<OutputStats>)>,
    spooled: Vec<SpooledHandle>,
    shaping: Option<Arc<ShapingStats>>,
    kernel: Option<EbpfStatsHandle>,
    runtimes: Vec<Arc<RuntimeStatus>>,
}

impl Telemetry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn parts(&self) -> std::sync::MutexGuard<'_, Parts> {
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sources attached and rules loaded.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn set_source(&self, name: &str) {
        self.parts().source = name.to_string();
    }

    pub fn set_dispatch(&self, stats: Arc<DispatchStats>, rules: RuleRegistry) {
        let mut p = self.parts();
        p.dispatch = Some(stats);
        p.rules = Some(rules);
    }

    pub fn set_outputs(&self, outputs: Vec<(String, Arc<OutputStats>)>, shaping: Arc<ShapingStats>) {
        let mut p = self.parts();
        p.outputs = outputs;
        p.shaping = Some(shaping);
    }

    pub fn set_kernel(&self, stats: EbpfStatsHandle) {
        self.parts().kernel = Some(stats);
    }

    pub fn add_runtime(&self, status: Arc<RuntimeStatus>) {
        self.parts().runtimes.push(status);
    }

    pub fn add_spooled(&self, handle: SpooledHandle) {
        self.parts().spooled.push(handle);
    }

    /// Every metric, in Prometheus' text exposition format (0.0.4).
    pub fn render(&self) -> String {
        let registry = Registry::new();
        let mut m = Families::new(&registry);
        self.fill(&mut m);
        let pc = prometheus::process_collector::ProcessCollector::for_self();
        let _ = registry.register(Box::new(pc));
        let mut out = Vec::new();
        TextEncoder::new().encode(&registry.gather(), &mut out).expect("text encoding into memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    fn fill(&self, m: &mut Families) {
        let p = self.parts();
        m.gauge("vigil_build_info", "Vigil's version (always 1).", &["version"])
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        m.gauge("vigil_ready", "1 once the event source is attached and the rules are loaded.", &[])
            .with_label_values::<&str>(&[])
            .set(self.is_ready() as i64);
        if let Some(d) = &p.dispatch {
            let events = m.counter("vigil_events_total", "Events dispatched, by source and kind.", &["source", "kind"]);
            for k in EventKind::ALL {
                events
                    .with_label_values(&[p.source.as_str(), k.name()])
                    .inc_by(d.by_kind[k as usize].load(Ordering::Relaxed));
            }
            let lost = m.counter(
                "vigil_events_lost_total",
                "Events lost before reaching the rules, by reason (from events-lost events).",
                &["reason"],
            );
            for (reason, n) in d.lost.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                lost.with_label_values(&[reason.as_str()]).inc_by(*n);
            }
            m.counter("vigil_events_unrouted_total", "Events no loaded rule subscribes to.", &[])
                .with_label_values::<&str>(&[])
                .inc_by(d.events_unrouted.load(Ordering::Relaxed));
            m.counter(
                "vigil_events_truncated_total",
                "Events cut to the per-event bounds (labels, argv, ancestry, long strings), flagged truncated.",
                &[],
            )
            .with_label_values::<&str>(&[])
            .inc_by(d.events_truncated.load(Ordering::Relaxed));
            m.counter("vigil_alerts_total", "Alerts raised by rules, before shaping.", &[])
                .with_label_values::<&str>(&[])
                .inc_by(d.alerts.load(Ordering::Relaxed));
            m.counter("vigil_rule_swaps_total", "Rule-set changes applied (loads, reloads, removals).", &[])
                .with_label_values::<&str>(&[])
                .inc_by(d.swaps.load(Ordering::Relaxed));
        }
        let kernel = p.kernel.as_ref().and_then(|k| k.lock().unwrap_or_else(|e| e.into_inner()).clone());
        if let Some(k) = kernel {
            let seen = m.counter(
                "vigil_ebpf_events_seen_total",
                "Events the eBPF programs saw (after the in-kernel filter), by kind.",
                &["kind"],
            );
            let kinds =
                ["process-exec", "process-fork", "process-exit", "cgroup-mkdir", "cgroup-rmdir", "namespace-change"];
            for (i, kind) in kinds.into_iter().enumerate() {
                seen.with_label_values(&[kind]).inc_by(k.seen[i]);
            }
            let one = |m: &mut Families, name: &str, help: &str, v: u64| {
                m.counter(name, help, &[]).with_label_values::<&str>(&[]).inc_by(v)
            };
            one(m, "vigil_ebpf_records_decoded_total", "Records read from the eBPF ring buffer.", k.decoded);
            m.gauge("vigil_process_tree_processes", "Processes in the process tree (live and recently exited).", &[])
                .with_label_values::<&str>(&[])
                .set(k.tree.nodes as i64);
            one(
                m,
                "vigil_process_tree_proc_lookups_total",
                "Ancestors no event had told of, looked up in /proc (enrichment misses).",
                k.tree.proc_lookups,
            );
            one(m, "vigil_process_tree_freed_total", "Exited processes freed after their grace period.", k.tree.freed);
            one(
                m,
                "vigil_process_tree_evicted_total",
                "Exited processes freed early because source.ebpf.max_exited was reached.",
                k.tree.evicted,
            );
            let lookups = m.counter(
                "vigil_cgroup_lookups_total",
                "Events whose cgroup was looked up for its container: found (hit) or unknown (miss, sent without one).",
                &["result"],
            );
            lookups.with_label_values(&["hit"]).inc_by(k.cgroups.hits);
            lookups.with_label_values(&["miss"]).inc_by(k.cgroups.misses);
            let known = m.gauge("vigil_cgroups", "cgroups known, by whether a container owns them.", &["owner"]);
            known.with_label_values(&["container"]).set(k.cgroups.containers as i64);
            known.with_label_values(&["host"]).set((k.cgroups.cgroups - k.cgroups.containers) as i64);
            let held = m.counter(
                "vigil_container_events_held_total",
                "Events held until a runtime described their container, by how they were let go.",
                &["outcome"],
            );
            held.with_label_values(&["resolved"]).inc_by(k.hold.resolved);
            held.with_label_values(&["timeout"]).inc_by(k.hold.timed_out);
            held.with_label_values(&["overflow"]).inc_by(k.hold.overflowed);
            held.with_label_values(&["not_found"]).inc_by(k.hold.not_found);
            held.with_label_values(&["unwatched"]).inc_by(k.hold.unwatched);
            held.with_label_values(&["shutdown"]).inc_by(k.hold.at_shutdown);
            m.gauge("vigil_container_events_holding", "Events waiting for their container's description.", &[])
                .with_label_values::<&str>(&[])
                .set(k.hold.holding as i64);
        }
        if !p.runtimes.is_empty() {
            let up = m.gauge(
                "vigil_runtime_up",
                "1 while the container runtime's API answers (its watcher is connected).",
                &["runtime", "endpoint"],
            );
            for r in &p.runtimes {
                up.with_label_values(&[r.runtime().name(), &r.endpoint.to_string_lossy()]).set(i64::from(r.is_up()));
            }
        }
        if let Some(d) = &p.dispatch
            && let Some(files) = d.rule_files.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
        {
            let g = m.gauge(
                "vigil_rule_file_rules",
                "Rules of each rule file (Falco, Sigma) by state: loaded, unsupported, disabled, invalid.",
                &["file", "state"],
            );
            for f in &files.report.files {
                for state in [Status::Loaded, Status::Unsupported, Status::Disabled, Status::Invalid] {
                    let n = f.rules.iter().filter(|r| r.status == state).count();
                    g.with_label_values(&[f.name.as_str(), state.name()]).set(n as i64);
                }
            }
        }
        if let Some(rules) = &p.rules {
            let rules = rules.lock().unwrap_or_else(|e| e.into_inner());
            m.gauge("vigil_rules_loaded", "Rules loaded now.", &[])
                .with_label_values::<&str>(&[])
                .set(rules.len() as i64);
            let events = m.counter("vigil_rule_events_total", "Events handed to each rule.", &["rule"]);
            let alerts = m.counter("vigil_rule_alerts_total", "Alerts each rule raised.", &["rule"]);
            let faults =
                m.counter("vigil_rule_faults_total", "Calls into each rule that failed, by fault.", &["rule", "fault"]);
            let quarantines = m.counter("vigil_rule_quarantines_total", "Times each rule was quarantined.", &["rule"]);
            let skipped = m.counter(
                "vigil_rule_events_skipped_total",
                "Events a rule did not see (quarantined, over its CPU budget, or restarting with a full backlog).",
                &["rule"],
            );
            let throttled = m.counter(
                "vigil_rule_events_throttled_total",
                "Of the skipped events, those skipped because the rule was over its CPU budget.",
                &["rule"],
            );
            let restarts = m.counter(
                "vigil_rule_restarts_total",
                "Instances of each rule made again (after a fault, or to hand its state to a new version).",
                &["rule"],
            );
            let time = m.seconds("vigil_rule_seconds_total", "Time spent in each rule's calls.", &["rule"]);
            let cpu = m.seconds(
                "vigil_rule_cpu_seconds_total",
                "CPU time of each rule's calls (its budget's clock).",
                &["rule"],
            );
            let by_file_rule = m.counter(
                "vigil_rule_file_alerts_total",
                "Alerts raised by each rule of the rule files (Falco rule name, Sigma title).",
                &["rule"],
            );
            for (id, s) in rules.iter() {
                let id = id.as_str();
                events.with_label_values(&[id]).inc_by(s.events_in.load(Ordering::Relaxed));
                alerts.with_label_values(&[id]).inc_by(s.alerts_out.load(Ordering::Relaxed));
                for (fault, n) in [
                    ("timeout", &s.timeouts),
                    ("trap", &s.traps),
                    ("memory", &s.memory_faults),
                    ("bad-output", &s.bad_output),
                ] {
                    faults.with_label_values(&[id, fault]).inc_by(n.load(Ordering::Relaxed));
                }
                quarantines.with_label_values(&[id]).inc_by(s.quarantines.load(Ordering::Relaxed));
                skipped.with_label_values(&[id]).inc_by(s.events_skipped.load(Ordering::Relaxed));
                throttled.with_label_values(&[id]).inc_by(s.events_throttled.load(Ordering::Relaxed));
                restarts.with_label_values(&[id]).inc_by(s.restarts.load(Ordering::Relaxed));
                time.with_label_values(&[id]).inc_by(s.time_ns.load(Ordering::Relaxed) as f64 / 1e9);
                cpu.with_label_values(&[id]).inc_by(s.cpu_ns.load(Ordering::Relaxed) as f64 / 1e9);
                for (name, n) in s.alerts_by_rule.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    by_file_rule.with_label_values(&[name.as_str()]).inc_by(*n);
                }
            }
        }
        if let Some(s) = &p.shaping {
            let held = m.counter(
                "vigil_alerts_suppressed_total",
                "Alerts held back by shaping, by reason (rate limits; duplicates folded into a later alert).",
                &["reason"],
            );
            for (reason, n) in [
                ("rule-rate-limit", &s.rate_limited_rule),
                ("global-rate-limit", &s.rate_limited_global),
                ("duplicate", &s.deduplicated),
            ] {
                held.with_label_values(&[reason]).inc_by(n.load(Ordering::Relaxed));
            }
            m.counter("vigil_alerts_redacted_total", "Alerts in which a secret was redacted.", &[])
                .with_label_values::<&str>(&[])
                .inc_by(s.redacted.load(Ordering::Relaxed));
        }
        let out_alerts = m.counter("vigil_output_alerts_total", "Alerts handed to each output.", &["output"]);
        let out_fail = m.counter("vigil_output_write_failures_total", "Failed writes to each output.", &["output"]);
        for (name, s) in &p.outputs {
            out_alerts.with_label_values(&[name.as_str()]).inc_by(s.alerts.load(Ordering::Relaxed));
            out_fail.with_label_values(&[name.as_str()]).inc_by(s.failures.load(Ordering::Relaxed));
        }
        for (kind, what) in [("webhook", "requests"), ("nats", "publish rounds")] {
            let outputs: Vec<&SpooledHandle> = p.spooled.iter().filter(|h| h.kind == kind).collect();
            if outputs.is_empty() {
                continue;
            }
            let name = |n: &str| format!("vigil_{kind}_{n}");
            let c = |m: &mut Families, n: &str, help: &str| m.counter(&name(n), help, &["output"]);
            let sent = c(m, "alerts_sent_total", "Alerts the receiver acknowledged.");
            let spooled = c(m, "alerts_spooled_total", "Alerts written to the spool.");
            let failed = c(m, "alerts_failed_total", "Alerts rejected for good (a webhook's 4xx).");
            let dropped = c(m, "alerts_dropped_total", "Alerts dropped from a full spool.");
            let filtered = c(m, "alerts_filtered_total", "Alerts below the output's min_priority.");
            let requests = c(m, "requests_total", &format!("Attempts to deliver ({what})."));
            let retries = c(m, "retries_total", "Failed attempts that are retried.");
            let recoveries = c(m, "spool_recoveries_total", "Damaged spool files moved aside and started anew.");
            let spool_bytes = m.gauge(&name("spool_bytes"), "Bytes waiting in the spool.", &["output"]);
            let spool_alerts = m.gauge(&name("spool_alerts"), "Alerts waiting in the spool.", &["output"]);
            let up = m.gauge(&name("up"), "1 if the last attempt succeeded.", &["output"]);
            for w in outputs {
                let l = [w.name.as_str()];
                let s = &w.stats;
                sent.with_label_values(&l).inc_by(s.sent.load(Ordering::Relaxed));
                spooled.with_label_values(&l).inc_by(s.spooled.load(Ordering::Relaxed));
                failed.with_label_values(&l).inc_by(s.failed.load(Ordering::Relaxed));
                dropped.with_label_values(&l).inc_by(s.dropped.load(Ordering::Relaxed));
                filtered.with_label_values(&l).inc_by(s.filtered.load(Ordering::Relaxed));
                requests.with_label_values(&l).inc_by(s.requests.load(Ordering::Relaxed));
                retries.with_label_values(&l).inc_by(s.retries.load(Ordering::Relaxed));
                recoveries.with_label_values(&l).inc_by(w.spool.recoveries());
                spool_bytes.with_label_values(&l).set(w.spool.bytes() as i64);
                spool_alerts.with_label_values(&l).set(w.spool.len() as i64);
                up.with_label_values(&l).set(s.up.load(Ordering::Relaxed) as i64);
            }
        }
    }
}

/// Metric families registered into one scrape's registry.
struct Families<'a> {
    registry: &'a Registry,
}

impl<'a> Families<'a> {
    fn new(registry: &'a Registry) -> Self {
        Families { registry }
    }

    fn register<C: Collector + Clone + 'static>(&self, c: C) -> C {
        self.registry.register(Box::new(c.clone())).expect("metric names are unique");
        c
    }

    fn counter(&mut self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    /// A counter of seconds (fractional).
    fn seconds(&mut self, name: &str, help: &str, labels: &[&str]) -> CounterVec {
        self.register(CounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_dispatch_and_rule_figures() {
        let t = Telemetry::new();
        let d = Arc::new(DispatchStats::default());
        d.by_kind[EventKind::ProcessExec as usize].store(7, Ordering::Relaxed);
        d.lost.lock().unwrap().insert("ebpf: ring buffer full".into(), 3);
        let rules: RuleRegistry = Default::default();
        rules.lock().unwrap().push(("crypto-miner".into(), Default::default()));
        t.set_source("ebpf");
        let kernel: EbpfStatsHandle = Default::default();
        *kernel.lock().unwrap() = Some(crate::sources::ebpf::EbpfStats {
            seen: [5, 4, 3, 0, 0, 0],
            tree: crate::enrich::process_tree::TreeStats { nodes: 70, proc_lookups: 2, ..Default::default() },
            cgroups: crate::enrich::cgroups::CgroupStats { cgroups: 5, containers: 3, hits: 9, misses: 1 },
            ..Default::default()
        });
        t.set_kernel(kernel);
        t.set_dispatch(d, rules);
        t.set_ready(true);
        let text = t.render();
        assert!(text.contains("vigil_events_total{kind=\"process-exec\",source=\"ebpf\"} 7"), "{text}");
        assert!(text.contains("vigil_events_lost_total{reason=\"ebpf: ring buffer full\"} 3"), "{text}");
        assert!(text.contains("vigil_rule_faults_total{fault=\"trap\",rule=\"crypto-miner\"} 0"), "{text}");
        assert!(text.contains("vigil_ready 1"), "{text}");
        assert!(text.contains("vigil_ebpf_events_seen_total{kind=\"process-fork\"} 4"), "{text}");
        assert!(text.contains("vigil_process_tree_processes 70"), "{text}");
        assert!(text.contains("vigil_process_tree_proc_lookups_total 2"), "{text}");
        assert!(text.contains("vigil_cgroup_lookups_total{result=\"miss\"} 1"), "{text}");
        assert!(text.contains("vigil_cgroups{owner=\"container\"} 3"), "{text}");
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }
}
