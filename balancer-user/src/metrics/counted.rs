//! A histogram whose buckets were counted elsewhere (by the data plane): a scrape reports
//! them, it observes nothing itself.

use std::sync::{Arc, Mutex};

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric},
};

/// Sum, count and (upper bound, count) buckets, not cumulative, the last bound infinite.
type Counts = (f64, u64, Vec<(f64, u64)>);

/// The histogram; cloned handles share their counts (a metric family hands out clones).
#[derive(Clone, Debug, Default)]
pub struct Counted(Arc<Mutex<Counts>>);

impl Counted {
    /// Sets the histogram to what was counted: `sum` of `count` observations in `buckets`.
    pub fn set(&self, sum: f64, count: u64, buckets: Vec<(f64, u64)>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = (sum, count, buckets);
    }
}

impl TypedMetric for Counted {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Counted {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = &*self.0.lock().unwrap_or_else(|e| e.into_inner());
        encoder.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::{encoding::prometheus_text, registry::Registry};

    use super::*;

    #[test]
    fn reports_the_counted_buckets_cumulatively() {
        let mut registry = Registry::default();
        let histogram = Counted::default();
        registry.register("handshake_seconds", "Handshakes", histogram.clone());
        histogram.set(0.0125, 3, vec![(0.001, 1), (0.01, 2), (f64::INFINITY, 0)]);
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry).unwrap();
        for line in [
            "# TYPE handshake_seconds histogram",
            "handshake_seconds_sum 0.0125",
            "handshake_seconds_count 3",
            "handshake_seconds_bucket{le=\"0.001\"} 1",
            "handshake_seconds_bucket{le=\"0.01\"} 3",
            "handshake_seconds_bucket{le=\"+Inf\"} 3",
        ] {
            assert!(text.contains(line), "{line:?} in:\n{text}");
        }
    }
}
