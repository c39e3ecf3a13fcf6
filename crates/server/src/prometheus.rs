//! The process-wide metrics recorder (the backend of the `metrics` facade) and its Prometheus
//! text rendering.
//!
//! Written here rather than taken from `metrics-exporter-prometheus`: that recorder calibrates
//! a TSC clock when it is built, for idle timeouts and summaries Berth does not use. The
//! calibration spins for 0.6 ms on this machine's start-up path, and for up to 50 ms when
//! another process competes for the CPU. Berth's metrics are a handful of counters, gauges and
//! fixed-bucket histograms: each series is a few atomics, found by its key.

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

/// Upper bounds of every histogram's buckets (request latencies, in seconds).
const BOUNDS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Every series recorded so far, and the descriptions given for their names.
#[derive(Default)]
pub struct Metrics {
    counters: Family<AtomicU64>,
    /// A gauge's value is an `f64`'s bits (the facade's own convention for `AtomicU64`).
    gauges: Family<AtomicU64>,
    histograms: Family<Buckets>,
    help: RwLock<HashMap<String, String>>,
}

/// The series of one kind, by key (name and labels).
struct Family<T>(RwLock<HashMap<Key, Arc<T>>>);

impl<T> Default for Family<T> {
    fn default() -> Self {
        Family(RwLock::default())
    }
}

impl<T: Default> Family<T> {
    /// The series `key`, made on first use. Known series take only the read lock.
    fn get(&self, key: &Key) -> Arc<T> {
        if let Some(s) = self.0.read().unwrap_or_else(|p| p.into_inner()).get(key) {
            return s.clone();
        }
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// The series, sorted by name and then labels: the exposition format wants a name's
    /// series together, under one `# TYPE` line.
    fn sorted(&self) -> Vec<(Key, Arc<T>)> {
        let mut v: Vec<_> = self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// One histogram series: a count per bucket (the last one past every bound) and the sum.
#[derive(Default)]
struct Buckets {
    counts: [AtomicU64; BOUNDS.len() + 1],
    /// The sum of the values, as an `f64`'s bits.
    sum: AtomicU64,
}

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        let i = BOUNDS
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(BOUNDS.len());
        self.counts[i].fetch_add(1, Relaxed);
        let _ = self.sum.fetch_update(Relaxed, Relaxed, |s| {
            Some((f64::from_bits(s) + value).to_bits())
        });
    }
}

/// The recorder as the facade sees it: the same [`Metrics`] that `/metrics` renders.
struct Installed(Arc<Metrics>);

impl Recorder for Installed {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.0.describe(key, description);
    }

    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.0.describe(key, description);
    }

    fn describe_histogram(&self, key: KeyName, _: Option<Unit>, description: SharedString) {
        self.0.describe(key, description);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.0.counters.get(key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.0.gauges.get(key))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.0.histograms.get(key))
    }
}

impl Metrics {
    /// Makes these the process's metrics; fails if a recorder is installed already.
    pub fn install(self: &Arc<Self>) -> anyhow::Result<()> {
        metrics::set_global_recorder(Installed(self.clone()))
            .map_err(|e| anyhow::anyhow!("metrics recorder: {e}"))
    }

    fn describe(&self, key: KeyName, description: SharedString) {
        self.help
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.as_str().to_owned(), description.into_owned());
    }

    /// Every series in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let help = self.help.read().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let mut last = String::new();
        let mut head = |out: &mut String, name: &str, kind: &str| {
            if last != name {
                if let Some(h) = help.get(name) {
                    let h = h.replace('\\', "\\\\").replace('\n', "\\n");
                    let _ = writeln!(out, "# HELP {name} {h}");
                }
                let _ = writeln!(out, "# TYPE {name} {kind}");
                name.clone_into(&mut last);
            }
        };
        for (key, c) in self.counters.sorted() {
            head(&mut out, key.name(), "counter");
            let _ = writeln!(
                out,
                "{}{} {}",
                key.name(),
                labels(&key, None),
                c.load(Relaxed)
            );
        }
        for (key, g) in self.gauges.sorted() {
            head(&mut out, key.name(), "gauge");
            let v = number(f64::from_bits(g.load(Relaxed)));
            let _ = writeln!(out, "{}{} {v}", key.name(), labels(&key, None));
        }
        for (key, h) in self.histograms.sorted() {
            let name = key.name();
            head(&mut out, name, "histogram");
            let mut total = 0;
            for (i, n) in h.counts.iter().enumerate() {
                total += n.load(Relaxed);
                let le = BOUNDS.get(i).map_or("+Inf".to_owned(), |b| number(*b));
                let _ = writeln!(out, "{name}_bucket{} {total}", labels(&key, Some(&le)));
            }
            let sum = number(f64::from_bits(h.sum.load(Relaxed)));
            let _ = writeln!(out, "{name}_sum{} {sum}", labels(&key, None));
            let _ = writeln!(out, "{name}_count{} {total}", labels(&key, None));
        }
        out
    }
}

/// `{k="v",…}` for the key's labels (and `le` for a bucket), or nothing when there are none.
fn labels(key: &Key, le: Option<&str>) -> String {
    let mut pairs: Vec<String> = key
        .labels()
        .map(|l| format!("{}=\"{}\"", l.key(), escape(l.value())))
        .collect();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

/// A label value as the format quotes it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value as the format spells it (`+Inf`, not Rust's `inf`).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_kind_in_the_text_format() {
        let m = Arc::new(Metrics::default());
        let r = Installed(m.clone());
        let meta = Metadata::new("t", metrics::Level::INFO, None);
        r.describe_counter("reqs".into(), None, "Requests\nseen".into());
        let key = Key::from_parts("reqs", vec![metrics::Label::new("path", "a\"b\\c")]);
        r.register_counter(&key, &meta).increment(2);
        r.register_counter(&key, &meta).increment(1);
        r.register_counter(&Key::from_name("bytes"), &meta)
            .increment(7);
        r.register_gauge(&Key::from_name("open"), &meta).set(1.5);
        r.register_gauge(&Key::from_name("inf"), &meta)
            .set(f64::INFINITY);
        let h = r.register_histogram(
            &Key::from_parts("lat", vec![metrics::Label::new("route", "x")]),
            &meta,
        );
        for v in [0.25, 0.5, 4.0, 100.0] {
            h.record(v);
        }
        let text = m.render();
        let expected = [
            "# TYPE bytes counter\nbytes 7\n",
            "# HELP reqs Requests\\nseen\n# TYPE reqs counter\nreqs{path=\"a\\\"b\\\\c\"} 3\n",
            "# TYPE inf gauge\ninf +Inf\n# TYPE open gauge\nopen 1.5\n",
            "# TYPE lat histogram\nlat_bucket{route=\"x\",le=\"0.0005\"} 0\n",
            "lat_bucket{route=\"x\",le=\"0.1\"} 0\nlat_bucket{route=\"x\",le=\"0.25\"} 1\nlat_bucket{route=\"x\",le=\"0.5\"} 2\nlat_bucket{route=\"x\",le=\"1\"} 2\n",
            "lat_bucket{route=\"x\",le=\"5\"} 3\n",
            "lat_bucket{route=\"x\",le=\"30\"} 3\nlat_bucket{route=\"x\",le=\"+Inf\"} 4\nlat_sum{route=\"x\"} 104.75\nlat_count{route=\"x\"} 4\n",
        ];
        for e in expected {
            assert!(text.contains(e), "missing {e:?} in\n{text}");
        }
    }
}
