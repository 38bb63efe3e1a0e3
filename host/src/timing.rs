//! Where one CNI call spends its time: named spans summed per name, for
//! the benchmark's cost breakdown. Reported on stderr as one JSON line when
//! `MULTUS_WASM_TIMINGS=1` (stdout stays the CNI result); free otherwise.

use std::cell::RefCell;
use std::time::{Duration, Instant};

/// The environment variable that turns the report on.
pub const ENV: &str = "MULTUS_WASM_TIMINGS";

thread_local! {
    static TOTALS: RefCell<Vec<(&'static str, Duration)>> = const { RefCell::new(Vec::new()) };
}

/// Times its scope under `name`.
pub struct Span {
    name: &'static str,
    started: Instant,
}

/// Start timing `name` until the returned span is dropped.
pub fn span(name: &'static str) -> Span {
    Span {
        name,
        started: Instant::now(),
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        TOTALS.with(|totals| {
            let mut totals = totals.borrow_mut();
            match totals.iter_mut().find(|(name, _)| *name == self.name) {
                Some((_, total)) => *total += elapsed,
                None => totals.push((self.name, elapsed)),
            }
        });
    }
}

/// Take this thread's totals (a daemon's call thread, after its call).
pub fn take() -> Vec<(&'static str, Duration)> {
    TOTALS.with(|totals| std::mem::take(&mut *totals.borrow_mut()))
}

/// The totals so far, in microseconds, as a JSON object.
pub fn report() -> serde_json::Value {
    TOTALS.with(|totals| {
        serde_json::Value::Object(
            totals
                .borrow()
                .iter()
                .map(|(name, total)| {
                    (
                        (*name).to_string(),
                        serde_json::json!(total.as_micros() as u64),
                    )
                })
                .collect(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_of_one_name_add_up() {
        {
            let _a = span("test-span");
            std::thread::sleep(Duration::from_millis(2));
        }
        {
            let _b = span("test-span");
            std::thread::sleep(Duration::from_millis(2));
        }
        let report = report();
        assert!(report["test-span"].as_u64().unwrap() >= 4000, "{report}");
    }
}
