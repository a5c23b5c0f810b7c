//! metrics: the daemon's Prometheus metrics (`netslot serve --metrics ADDR`): the families,
//! where they are counted from, and a small HTTP endpoint that serves them.
//! The families live in one process-wide registry (the `prometheus` crate's types are
//! atomics: the connection threads and the engine thread update them without a lock);
//! the endpoint answers `GET /metrics` in the text exposition format (0.0.4), one
//! connection at a time, each bounded in size and time.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use netslot::daemon::protocol::{Operation, Response};
use netslot::{ProvisionReport, SlotError};

/// Every metric of the daemon.
pub(crate) struct Metrics {
    registry: Registry,
    /// Requests answered, by operation.
    pub requests: IntCounterVec,
    /// From a request line's arrival to its answer, by operation.
    pub request_seconds: HistogramVec,
    /// Refused or failed requests, by operation and the protocol's error code.
    pub errors: IntCounterVec,
    /// Slots failed by the kernel, by the step that failed and its errno.
    pub slot_errors: IntCounterVec,
    /// Engine calls, by kind (attach, detach, warm, release).
    pub batches: IntCounterVec,
    /// Requests coalesced into one round.
    pub round_requests: Histogram,
    /// Warm slots ready to be acquired.
    pub warm_slots: IntGauge,
    /// Live CNI attachments.
    pub attachments: IntGauge,
    /// The engine's own estimate of how long each group change held RTNL: the time from
    /// the change's send to its reply, averaged over one call's changes.
    pub group_change_seconds: Histogram,
}

fn buckets(from: f64, factor: f64, n: usize) -> Vec<f64> {
    prometheus::exponential_buckets(from, factor, n).expect("valid buckets")
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let histogram = |name: &str, help: &str, b: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(b))
                .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "netslot_request_duration_seconds",
                "Time from a request line's arrival to its answer, by operation.",
            )
            .buckets(buckets(50e-6, 2.0, 18)),
            &["op"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(request_seconds.clone()))
            .expect("unique metric");
        Self {
            requests: counter(
                "netslot_requests_total",
                "Requests answered, by operation.",
                &["op"],
            ),
            errors: counter(
                "netslot_request_errors_total",
                "Requests answered with an error, by operation and error code.",
                &["op", "code"],
            ),
            slot_errors: counter(
                "netslot_slot_errors_total",
                "Slots the kernel refused, by the step that failed and its errno.",
                &["step", "errno"],
            ),
            batches: counter(
                "netslot_engine_batches_total",
                "Engine calls, by kind (attach, detach, warm, release).",
                &["kind"],
            ),
            round_requests: histogram(
                "netslot_round_requests",
                "Requests coalesced into one round of the engine thread.",
                buckets(1.0, 2.0, 10),
            ),
            warm_slots: gauge(
                "netslot_warm_pool_slots",
                "Warm slots ready to be acquired.",
            ),
            attachments: gauge("netslot_attachments", "Live CNI attachments."),
            group_change_seconds: histogram(
                "netslot_group_change_hold_seconds",
                "Estimated RTNL hold of one group change (send to reply, averaged over a call's changes).",
                buckets(100e-6, 2.0, 14),
            ),
            request_seconds,
            registry,
        }
    }

    /// The registry in the text exposition format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("metrics encode");
        out
    }

    /// Counts one answered request of operation `op` that took `took`.
    pub fn answered(&self, op: &str, took: Duration, r: &Response) {
        self.requests.with_label_values(&[op]).inc();
        self.request_seconds
            .with_label_values(&[op])
            .observe(took.as_secs_f64());
        if let Some(e) = &r.error {
            let code = serde_json::to_value(e.code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            self.errors.with_label_values(&[op, &code]).inc();
        }
    }

    /// Counts one engine call of `kind` and its group changes' estimated hold.
    pub fn engine_call(&self, kind: &str, report: Option<&ProvisionReport>) {
        self.batches.with_label_values(&[kind]).inc();
        if let Some(r) = report.filter(|r| r.group_changes > 0) {
            self.group_change_seconds
                .observe(r.group_changes_took.as_secs_f64() / r.group_changes as f64);
        }
    }

    /// Counts a slot the kernel refused.
    pub fn slot_failed(&self, e: &SlotError) {
        self.slot_errors
            .with_label_values(&[e.op.as_str(), &e.errno.to_string()])
            .inc();
    }
}

/// The daemon's metrics.
pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The label of a request's operation.
pub(crate) fn op_name(op: &Operation) -> &'static str {
    match op {
        Operation::Status => "status",
        Operation::Stats => "stats",
        Operation::Attach { .. } => "attach",
        Operation::Detach { .. } => "detach",
        Operation::Check { .. } => "check",
        Operation::Gc { .. } => "gc",
        Operation::Acquire => "acquire",
        Operation::Release { .. } => "release",
    }
}

/// Longest HTTP request head read from a scraper.
const MAX_HEAD: usize = 8192;
/// How long a scraper may take to send its request or read the answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` on `addr` from a thread of its own, one connection at a time.
pub(crate) fn serve(addr: SocketAddr) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    LazyLock::force(&METRICS);
    std::thread::Builder::new()
        .name("netslot-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        if let Err(e) = answer(s) {
                            tracing::debug!("metrics scrape: {e}");
                        }
                    }
                    Err(e) => {
                        tracing::warn!("metrics accept: {e}");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        })?;
    Ok(bound)
}

fn answer(mut s: TcpStream) -> io::Result<()> {
    s.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    s.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let (status, body) = if line.starts_with(b"GET /metrics ") || line == b"GET /metrics" {
        ("200 OK", METRICS.encode())
    } else {
        (
            "404 Not Found",
            b"only GET /metrics is served here\n".to_vec(),
        )
    };
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(&body)
}
