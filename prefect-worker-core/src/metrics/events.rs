//! The event emitter's counters, read from [`EventEmitter::stats`] on every scrape:
//! `prefect_worker_events_{emitted,delivered,dropped}_total`, `prefect_worker_events_queued`,
//! `prefect_worker_events_queue_capacity` and `prefect_worker_events_connected`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::Metrics;
use crate::events::EventEmitter;

#[derive(Debug)]
struct EventsCollector {
    emitter: EventEmitter,
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for EventsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self.emitter.stats();
        let e = &mut encoder;
        counter(
            e,
            "prefect_worker_events_emitted",
            "Events handed to the emitter (worker and infrastructure events).",
            s.emitted,
        )?;
        counter(
            e,
            "prefect_worker_events_delivered",
            "Events the Prefect API confirmed.",
            s.delivered,
        )?;
        counter(
            e,
            "prefect_worker_events_dropped",
            "Events dropped: the oldest when the queue was full, what was queued at shutdown, everything for an incompatible server.",
            s.dropped,
        )?;
        gauge(
            e,
            "prefect_worker_events_queued",
            "Events waiting for delivery, sent but unconfirmed included.",
            i64::try_from(s.queued).unwrap_or(i64::MAX),
        )?;
        gauge(
            e,
            "prefect_worker_events_queue_capacity",
            "The events queue's bound (PREFECT_EVENTS_WORKER_MAX_QUEUE_SIZE).",
            i64::try_from(s.capacity).unwrap_or(i64::MAX),
        )?;
        gauge(
            e,
            "prefect_worker_events_connected",
            "1 while the events websocket is connected, else 0.",
            i64::from(s.connected),
        )
    }
}

/// Exposes `emitter`'s counters in `metrics` (zeros when events are off).
pub(crate) fn register(metrics: &Metrics, emitter: EventEmitter) {
    metrics.register_collector(EventsCollector { emitter });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Format;

    #[test]
    fn a_disabled_emitter_reports_zeros() {
        let m = Metrics::new();
        register(&m, EventEmitter::disabled());
        let text = m.encode(Format::PrometheusText);
        assert!(
            text.contains("prefect_worker_events_dropped_total 0\n"),
            "{text}"
        );
        assert!(
            text.contains("prefect_worker_events_connected 0\n"),
            "{text}"
        );
    }
}
