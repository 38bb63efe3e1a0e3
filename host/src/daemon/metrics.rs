//! The daemon's Prometheus metrics (prometheus-client), served as text on
//! `GET /metrics`: requests by command and result, latency per command and
//! per step of a call, sandbox traps by kind, cache sizes, watch restarts
//! and API GETs the caches could not save.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

fn histogram() -> Histogram {
    // 100 µs to ~3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Every metric of the daemon.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<Labels, Counter>,
    in_flight: Family<Labels, Gauge>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    steps: Family<Labels, Histogram, fn() -> Histogram>,
    traps: Family<Labels, Counter>,
    cache_objects: Family<Labels, Gauge>,
    watch_restarts: Family<Labels, Counter>,
    watch_errors: Family<Labels, Counter>,
    api_gets: Family<Labels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("multus_wasm");
        let requests = Family::<Labels, Counter>::default();
        let in_flight = Family::<Labels, Gauge>::default();
        let latency = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            histogram as fn() -> Histogram,
        );
        let steps = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            histogram as fn() -> Histogram,
        );
        let traps = Family::<Labels, Counter>::default();
        let cache_objects = Family::<Labels, Gauge>::default();
        let watch_restarts = Family::<Labels, Counter>::default();
        let watch_errors = Family::<Labels, Counter>::default();
        let api_gets = Family::<Labels, Counter>::default();
        registry.register(
            "cni_requests",
            "CNI requests by command and result",
            requests.clone(),
        );
        registry.register(
            "cni_requests_in_flight",
            "CNI requests being served, by command",
            in_flight.clone(),
        );
        registry.register(
            "cni_request_duration_seconds",
            "CNI request latency by command",
            latency.clone(),
        );
        registry.register(
            "cni_step_duration_seconds",
            "Time spent per step of a CNI call, by command",
            steps.clone(),
        );
        registry.register(
            "sandbox_traps",
            "Plugin calls stopped by the sandbox or the policy, by kind",
            traps.clone(),
        );
        registry.register(
            "cache_objects",
            "Objects in the informer caches",
            cache_objects.clone(),
        );
        registry.register(
            "watch_restarts",
            "Watches that had to relist",
            watch_restarts.clone(),
        );
        registry.register(
            "watch_errors",
            "Watch errors (retried with backoff)",
            watch_errors.clone(),
        );
        registry.register(
            "api_gets",
            "GETs for objects the caches did not hold",
            api_gets.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            requests,
            in_flight,
            latency,
            steps,
            traps,
            cache_objects,
            watch_restarts,
            watch_errors,
            api_gets,
        }
    }

    /// A request of `command` starts (`+1`) or ends (`-1`).
    pub fn in_flight(&self, command: &str, delta: i64) {
        self.in_flight
            .get_or_create(&vec![("command", command.to_string())])
            .inc_by(delta);
    }

    /// Record a finished CNI request: `code` 0 on success, else its CNI code.
    pub fn request(
        &self,
        command: &str,
        code: u32,
        took: Duration,
        steps: &[(&'static str, Duration)],
    ) {
        let result = if code == 0 {
            "ok".to_string()
        } else {
            format!("error-{code}")
        };
        self.requests
            .get_or_create(&vec![("command", command.to_string()), ("result", result)])
            .inc();
        self.latency
            .get_or_create(&vec![("command", command.to_string())])
            .observe(took.as_secs_f64());
        for (step, total) in steps {
            self.steps
                .get_or_create(&vec![
                    ("command", command.to_string()),
                    ("step", step.to_string()),
                ])
                .observe(total.as_secs_f64());
        }
        if let Some(kind) = trap_kind(code) {
            self.traps
                .get_or_create(&vec![("kind", kind.to_string())])
                .inc();
        }
    }

    pub fn cache_size(&self, kind: &str, objects: usize) {
        self.cache_objects
            .get_or_create(&vec![("kind", kind.to_string())])
            .set(objects as i64);
    }

    pub fn watch_restart(&self, kind: &str) {
        self.watch_restarts
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
    }

    pub fn watch_error(&self, kind: &str) {
        self.watch_errors
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
    }

    pub fn api_get(&self, kind: &str) {
        self.api_gets
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let registry = self.registry.lock().expect("metrics lock");
        let _ = encode(&mut text, &registry);
        text
    }
}

/// The sandbox or policy failure a CNI code stands for.
fn trap_kind(code: u32) -> Option<&'static str> {
    Some(match code {
        100 => "plugin-refused",
        101 => "deadline",
        102 => "fuel",
        103 => "memory",
        104 => "stack",
        105 => "trap",
        106 => "output",
        107 => "policy",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_traps_are_exposed_in_prometheus_text() {
        let metrics = Metrics::new();
        metrics.request(
            "ADD",
            0,
            Duration::from_millis(3),
            &[("netlink", Duration::from_micros(500))],
        );
        metrics.request("ADD", 101, Duration::from_millis(300), &[]);
        metrics.cache_size("pods", 12);
        metrics.watch_restart("pods");
        let text = metrics.encode();
        for line in [
            r#"multus_wasm_cni_requests_total{command="ADD",result="ok"} 1"#,
            r#"multus_wasm_cni_requests_total{command="ADD",result="error-101"} 1"#,
            r#"multus_wasm_sandbox_traps_total{kind="deadline"} 1"#,
            r#"multus_wasm_cache_objects{kind="pods"} 12"#,
            r#"multus_wasm_watch_restarts_total{kind="pods"} 1"#,
            r#"multus_wasm_cni_step_duration_seconds_count{command="ADD",step="netlink"} 1"#,
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
