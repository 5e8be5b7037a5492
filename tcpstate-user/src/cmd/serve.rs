//! `tcpstate serve`: tracks as `timewait` does, diagnoses over a sliding
//! window as `diagnose` does, and at each `--interval` hands a
//! [`Snapshot`] to an HTTP server on its own thread, which serves
//! `/metrics` (Prometheus text, or OpenMetrics on `Accept`), `/findings`
//! and `/healthz`. A slow scraper never holds up the event loop: it only
//! takes the latest snapshot.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use rustc_hash::FxHashMap;

use super::{
    diagnose::LiveDiagnosis,
    engine::{self, Engine, Pacing, View},
    output,
    timewait::{self, Activity, Recent},
};
use crate::{
    cli::{GroupBy, ServeArgs},
    export::{
        snapshot::{Namespace, Pools, Snapshot},
        tally::{CloseLabels, Tally},
    },
    host::process::Usage,
    messages::{note, warning},
    render::{Losses, Printer, json, prometheus},
    track::{
        filter::Filter,
        timewait::{Entry, ExitReason, TwSink},
        tracker::{BindFailure, Close, ConnectFailure, Sink, Transition},
    },
};

/// What the HTTP server serves: the latest snapshot, and when it was taken.
#[derive(Default)]
struct Published {
    snapshot: Option<Arc<Snapshot>>,
    at: Option<Instant>,
}

type Shared = Arc<Mutex<Published>>;

/// The exporter's state on the event loop's thread.
struct Exporter<P> {
    args: Settings,
    filter: Filter,
    printer: P,
    tally: Tally,
    recent: Recent,
    diagnosis: LiveDiagnosis,
    /// When each namespace with series was last known to exist.
    seen: FxHashMap<u32, Instant>,
    published: Shared,
}

/// The options the exporter keeps.
struct Settings {
    view: timewait::Settings,
    top_pools: usize,
    forget_after: Duration,
}

impl<P> Sink for Exporter<P> {
    fn transition(&mut self, _: &Transition) {}

    fn close(&mut self, c: &Close) {
        if self.filter.matches(&c.id, c.owner.as_ref()) {
            self.tally.close(c);
            self.diagnosis.close(c);
        }
    }

    fn connect_failed(&mut self, f: &ConnectFailure) {
        if self.filter.matches(&f.id, f.owner.as_ref()) {
            self.tally.connect_failed(f.id.netns, f.reason);
            self.diagnosis.connect_failed(f);
            self.recent.failed(f);
        }
    }

    /// Not traced for the exporter.
    fn bind_failed(&mut self, _: &BindFailure) {}
}

impl<P> TwSink for Exporter<P> {
    fn tw_enter(&mut self, e: &Entry) {
        if self.filter.matches_entry(e) {
            self.tally.tw_enter(e.id.netns);
            self.recent.entered(e);
        }
    }

    fn tw_exit(&mut self, e: &Entry, reason: ExitReason, _: u64) {
        if self.filter.matches_entry(e) {
            self.tally.tw_exit(e.id.netns, reason);
        }
    }
}

impl<P: Printer> View for Exporter<P> {
    type P = P;

    fn printer(&self) -> &P {
        &self.printer
    }

    fn printer_mut(&mut self) -> &mut P {
        &mut self.printer
    }

    fn refresh(&mut self, engine: &Engine, lost: Losses, now_ns: u64) {
        let snapshot = self.snapshot(engine, lost, now_ns);
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        published.snapshot = Some(Arc::new(snapshot));
        published.at = Some(Instant::now());
    }
}

impl<P> Exporter<P> {
    fn snapshot(&mut self, engine: &Engine, lost: Losses, now_ns: u64) -> Snapshot {
        let (_, rates, failures) = self.recent.rates();
        let frame = timewait::frame(
            engine,
            &self.filter,
            &self.args.view,
            Activity {
                rates: &rates,
                failures: &failures,
                owners: &FxHashMap::default(),
            },
            lost.total(),
            None,
            now_ns,
        );
        let mut time_wait: FxHashMap<u32, [u64; 3]> = FxHashMap::default();
        for e in &frame.entries {
            time_wait.entry(e.id.netns).or_default()[e.role as usize] += 1;
        }
        self.tally.refresh();
        self.forget_gone(engine, &time_wait);
        // The namespaces in view (tcpstate's own first, freshly read),
        // then every other one known or with series.
        let mut namespaces: Vec<Namespace> = Vec::new();
        let known = engine.known_namespaces();
        let with_series: Vec<u32> = self.tally.namespaces().collect();
        let figures = frame.namespaces.into_iter().chain(known).chain(
            with_series
                .into_iter()
                .chain(time_wait.keys().copied())
                .map(|ns| engine.identity(ns)),
        );
        for f in figures {
            if namespaces.iter().all(|n| n.figures.netns != f.netns) {
                namespaces.push(Namespace {
                    time_wait: time_wait.get(&f.netns).copied().unwrap_or_default(),
                    figures: f,
                });
            }
        }
        let (findings, window_s) = self.diagnosis.findings(engine, lost.total(), &self.filter);
        Snapshot {
            namespaces,
            pools: Pools::fold(frame.pools, self.args.top_pools),
            tally: self.tally.clone(),
            findings,
            window_s,
            events: engine.events,
            lost,
            tw: frame.stats,
            programs: engine.programs.clone(),
            process: Usage::read(),
        }
    }

    /// Drops the series of namespaces gone for `--forget-after`: neither
    /// known to the engine (which forgets those the kernel no longer
    /// lists) nor holding TIME_WAIT sockets.
    fn forget_gone(&mut self, engine: &Engine, time_wait: &FxHashMap<u32, [u64; 3]>) {
        let now = Instant::now();
        let with_series: Vec<u32> = self.tally.namespaces().collect();
        for ns in with_series {
            if engine.facts.contains_key(&ns) || time_wait.contains_key(&ns) {
                self.seen.insert(ns, now);
            } else {
                let since = *self.seen.entry(ns).or_insert(now);
                if now.duration_since(since) >= self.args.forget_after {
                    self.tally.forget(ns);
                    self.seen.remove(&ns);
                }
            }
        }
    }
}

pub async fn run(args: &ServeArgs) -> Result<()> {
    super::with_printer!(args.common.json, printer, stats => serve(args, printer, stats).await)
}

async fn serve<P: Printer>(args: &ServeArgs, printer: P, output: output::Stats) -> Result<()> {
    let common = &args.common;
    super::warn_unmatchable(common);
    let published = Shared::default();
    // Refused before tracing: an address that cannot be listened on.
    let listener = std::net::TcpListener::bind(args.listen).with_context(|| {
        format!(
            "listening on {}: choose another address with --listen ADDR:PORT",
            args.listen
        )
    })?;
    listener
        .set_nonblocking(true)
        .context("setting up the listening socket")?;
    let local = listener.local_addr().context("the listening address")?;
    http_thread(listener, published.clone(), args.interval)?;
    note!("serving http://{local}/metrics, /findings and /healthz");
    let labels = CloseLabels::of(&args.close_labels).map_err(anyhow::Error::msg)?;
    let refreshes_to_forget =
        (args.forget_after.as_secs_f64() / args.interval.as_secs_f64()).ceil() as u64;
    let mut view = Exporter {
        args: Settings {
            view: timewait::Settings {
                group_by: GroupBy::Peer,
                threshold: args.pressure.threshold,
                tw_len_s: common.tw_len.as_secs_f64(),
            },
            top_pools: args.top_pools,
            forget_after: args.forget_after,
        },
        filter: common.filter(),
        printer,
        tally: Tally::new(labels, args.top_processes, refreshes_to_forget),
        recent: Recent::new(),
        diagnosis: LiveDiagnosis::new(
            common.tw_len.as_secs_f64(),
            args.window,
            args.pressure.threshold,
        ),
        seen: FxHashMap::default(),
        published,
    };
    let pacing = Pacing {
        reconcile: Some(common.reconcile),
        refresh: Some(args.interval),
        output,
        syscalls: false,
        closes_only: true,
        program_runs: true,
    };
    let result = engine::run(common, pacing, &mut view).await;
    view.printer.flush();
    result
}

/// Starts the HTTP server on a thread of its own, with its own runtime.
fn http_thread(
    listener: std::net::TcpListener,
    published: Shared,
    interval: Duration,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP server's runtime")?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/findings", get(findings_json))
        .route("/healthz", get(healthz))
        .with_state(Server {
            published,
            // Stale once three snapshots are missing.
            stale_after: (interval * 3).max(Duration::from_secs(5)),
        });
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            let served = runtime.block_on(async {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                axum::serve(listener, app).await
            });
            if let Err(e) = served {
                warning!("the HTTP server stopped: {e}");
            }
        })
        .context("starting the HTTP server's thread")?;
    Ok(())
}

#[derive(Clone)]
struct Server {
    published: Shared,
    stale_after: Duration,
}

impl Server {
    /// The latest snapshot and its age; `None` before the first.
    fn latest(&self) -> Option<(Arc<Snapshot>, Duration)> {
        let published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        Some((published.snapshot.clone()?, published.at?.elapsed()))
    }
}

/// Too early: tracing has not begun or no snapshot is taken yet.
fn starting() -> axum::response::Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "starting: no snapshot taken yet\n",
    )
        .into_response()
}

async fn metrics(State(server): State<Server>, headers: HeaderMap) -> axum::response::Response {
    let Some((snapshot, _)) = server.latest() else {
        return starting();
    };
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let (body, content_type) = if openmetrics {
        (prometheus::encode(snapshot, true), prometheus::OPENMETRICS)
    } else {
        (
            prometheus::encode(snapshot, false),
            prometheus::PROMETHEUS_TEXT,
        )
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn findings_json(State(server): State<Server>) -> axum::response::Response {
    let Some((snapshot, _)) = server.latest() else {
        return starting();
    };
    let body = json::findings_document(&snapshot.findings, snapshot.window_s);
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// 200 while snapshots keep coming; 503 before the first, or when the
/// event loop has stopped taking them.
async fn healthz(State(server): State<Server>) -> axum::response::Response {
    match server.latest() {
        None => starting(),
        Some((_, age)) if age > server.stale_after => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "stale: the latest snapshot is {:.1} s old\n",
                age.as_secs_f64()
            ),
        )
            .into_response(),
        Some(_) => (StatusCode::OK, "ok\n").into_response(),
    }
}
