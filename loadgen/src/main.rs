//! `larder-loadgen`: drives Larder (or any y-websocket server) with real yrs
//! clients and prints one JSON report.
//!
//! Modes:
//! - `fixed`: D lists × C clients edit at a total rate for a duration; every
//!   receiving client times every other client's edits.
//! - `ramp`: the same, raising the rate step by step until p99 passes a
//!   limit or deliveries go missing; reports the highest sustained rate.
//! - `idle`: holds D × C connections open.
//! - `coldload-build` / `coldload`: writes lists with a long history; then,
//!   after a server restart, times how long a fresh client needs to hold a
//!   list's full state.
#![forbid(unsafe_code)]

mod client;
mod provision;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use client::{Client, ListPeers, SenderLog, Stats};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use uuid::Uuid;
use yrs::Doc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Fixed,
    Ramp,
    Idle,
    ColdloadBuild,
    Coldload,
}

/// Load generator for Larder.
#[derive(Debug, Clone, Parser)]
#[command(name = "larder-loadgen", version, about)]
struct Args {
    /// WebSocket URL template with `{list}` and optionally `{token}`
    /// (repeat for several replicas; a list's clients are spread over them).
    #[arg(long = "url", required = true)]
    urls: Vec<String>,

    /// Token substituted for `{token}`.
    #[arg(long, default_value = "")]
    token: String,

    /// Larder's HTTP address (`http://host:port`): sign up an account and
    /// create every list through the API before opening it, and use that
    /// account's token for `{token}`. Without it lists are opened as they are
    /// (for servers that need no accounts).
    #[arg(long)]
    api: Option<String>,

    /// The account `--api` signed up.
    #[arg(skip)]
    provisioner: Option<provision::Provisioner>,

    #[arg(long, value_enum, default_value = "fixed")]
    mode: Mode,

    /// Lists.
    #[arg(long, default_value_t = 50)]
    lists: usize,

    /// Clients per list.
    #[arg(long, default_value_t = 4)]
    clients: usize,

    /// Edits per second over all clients (`ramp`: the first step's rate).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,

    /// Seconds of load (`ramp`: per step; `idle`: how long to hold).
    #[arg(long, default_value_t = 20.0)]
    duration: f64,

    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,

    /// `ramp`: each step's rate is the last one's times this.
    #[arg(long, default_value_t = 1.5)]
    ramp_factor: f64,

    /// `ramp`: a step whose p99 exceeds this many milliseconds ends the ramp.
    #[arg(long, default_value_t = 100.0)]
    ramp_p99_ms: f64,

    /// Connections opened at once.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,

    /// `coldload-build`: edits per list.
    #[arg(long, default_value_t = 10_000)]
    history: usize,

    /// `coldload-build`: items the list holds at most; beyond it, adding
    /// clears the oldest item first, as a family clears what it bought
    /// (0: never clear, the list only grows).
    #[arg(long, default_value_t = 100)]
    max_items: usize,

    /// `coldload-build` writes the lists here; `coldload` reads them.
    #[arg(long, default_value = "coldload-lists.json")]
    lists_file: String,
}

impl Args {
    fn url(&self, n: usize, list: Uuid) -> String {
        self.urls[n % self.urls.len()]
            .replace("{list}", &list.to_string())
            .replace("{token}", &self.token)
    }
}

/// Fresh list ids for a run, created through the API first when `--api`
/// is given.
async fn new_lists(args: &Args) -> anyhow::Result<Vec<Uuid>> {
    let lists: Vec<Uuid> = (0..args.lists).map(|_| Uuid::now_v7()).collect();
    if let Some(provisioner) = &args.provisioner {
        let gate = Arc::new(Semaphore::new(16));
        let mut tasks = Vec::new();
        for &list in &lists {
            let provisioner = provisioner.clone();
            let gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.expect("gate open");
                provisioner.create_list(list).await
            }));
        }
        for task in tasks {
            task.await??;
        }
    }
    Ok(lists)
}

/// CPU seconds this process used (user + system).
fn own_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command; utime and stime are 14 and 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

fn latency_json(hist: &Histogram<u64>) -> Value {
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    json!({
        "samples": hist.len(),
        "p50_ms": ms(0.50),
        "p95_ms": ms(0.95),
        "p99_ms": ms(0.99),
        "max_ms": hist.max() as f64 / 1000.0,
    })
}

/// Connects D × C clients (clients of a list round-robin over the URLs).
async fn connect_all(args: &Args, stats: &Arc<Stats>) -> anyhow::Result<(Vec<Client>, Duration)> {
    let lists = new_lists(args).await?;
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut tasks = Vec::new();
    for list in lists {
        let docs: Vec<Doc> = (0..args.clients).map(|_| Doc::new()).collect();
        let peers = Arc::new(ListPeers {
            senders: docs.iter().map(|d| SenderLog::new(d.client_id())).collect(),
        });
        for (n, doc) in docs.into_iter().enumerate() {
            let url = args.url(n, list);
            let peers = peers.clone();
            let stats = stats.clone();
            let gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.expect("gate open");
                Client::connect(&url, n, doc, peers, stats).await
            }));
        }
    }
    let mut clients = Vec::with_capacity(tasks.len());
    let mut failures = 0usize;
    let mut first_error = None;
    for task in tasks {
        match task.await? {
            Ok(client) => clients.push(client),
            Err(e) => {
                failures += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        stats
            .errors
            .fetch_add(failures as u64, std::sync::atomic::Ordering::Relaxed);
        eprintln!("{failures} connections failed; first: {e:#}");
    }
    Ok((clients, started.elapsed()))
}

struct Running {
    rate: watch::Sender<f64>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

fn start(clients: Vec<Client>) -> Running {
    let (rate, rate_rx) = watch::channel(0.0);
    let (stop, stop_rx) = watch::channel(false);
    let tasks = clients
        .into_iter()
        .map(|c| tokio::spawn(c.run(rate_rx.clone(), stop_rx.clone())))
        .collect();
    Running { rate, stop, tasks }
}

impl Running {
    /// Sets the total rate, shared evenly by `clients` clients.
    fn set_rate(&self, total: f64, clients: usize) {
        let _ = self.rate.send(total / clients.max(1) as f64);
    }

    async fn finish(self, stats: &Stats) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if !matches!(task.await, Ok(Ok(()))) {
                stats
                    .errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// Pauses sending and waits until every expected delivery arrived or
/// `limit` passed.
async fn drain(stats: &Stats, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let expected = stats.expected.load(std::sync::atomic::Ordering::Relaxed);
        let delivered = stats.delivered.load(std::sync::atomic::Ordering::Relaxed);
        if delivered >= expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn fixed(args: &Args) -> anyhow::Result<Value> {
    let stats = Stats::new();
    let (clients, connect_time) = connect_all(args, &stats).await?;
    let count = clients.len();
    let running = start(clients);
    running.set_rate(args.rate, count);
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let _ = stats.take();
    let cpu_before = own_cpu_seconds();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    running.set_rate(0.0, count);
    let sending = started.elapsed().as_secs_f64();
    drain(&stats, Duration::from_secs(5)).await;
    let (sent, expected, delivered, hist) = stats.take();
    let cpu = own_cpu_seconds() - cpu_before;
    running.finish(&stats).await;
    Ok(json!({
        "mode": "fixed",
        "lists": args.lists,
        "clients_per_list": args.clients,
        "replicas": args.urls.len(),
        "connections": count,
        "connect_seconds": connect_time.as_secs_f64(),
        "target_edits_per_second": args.rate,
        "seconds": sending,
        "edits_sent": sent,
        "edits_per_second": sent as f64 / sending,
        "deliveries_expected": expected,
        "deliveries_received": delivered,
        "lost": expected.saturating_sub(delivered),
        "deliveries_per_second": delivered as f64 / sending,
        "latency": latency_json(&hist),
        "errors": stats.errors.load(std::sync::atomic::Ordering::Relaxed),
        "loadgen_cpu_seconds": cpu,
    }))
}

async fn ramp(args: &Args) -> anyhow::Result<Value> {
    let stats = Stats::new();
    let (clients, connect_time) = connect_all(args, &stats).await?;
    let count = clients.len();
    let running = start(clients);
    let mut rate = args.rate;
    let mut steps = Vec::new();
    let mut best: Option<Value> = None;
    loop {
        running.set_rate(rate, count);
        tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
        let _ = stats.take();
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
        running.set_rate(0.0, count);
        let sending = started.elapsed().as_secs_f64();
        drain(&stats, Duration::from_secs(3)).await;
        let (sent, expected, delivered, hist) = stats.take();
        let p99_ms = hist.value_at_quantile(0.99) as f64 / 1000.0;
        let lost = expected.saturating_sub(delivered);
        let step = json!({
            "target_edits_per_second": rate,
            "edits_per_second": sent as f64 / sending,
            "deliveries_per_second": delivered as f64 / sending,
            "lost": lost,
            "latency": latency_json(&hist),
        });
        eprintln!("ramp step: {step}");
        steps.push(step.clone());
        let held = lost == 0 && p99_ms <= args.ramp_p99_ms && sent > 0;
        // A step that could not even send its rate is the ceiling too.
        let kept_up = sent as f64 / sending >= rate * 0.9;
        if !held || !kept_up {
            break;
        }
        best = Some(step);
        rate *= args.ramp_factor;
    }
    running.finish(&stats).await;
    Ok(json!({
        "mode": "ramp",
        "lists": args.lists,
        "clients_per_list": args.clients,
        "replicas": args.urls.len(),
        "connections": count,
        "connect_seconds": connect_time.as_secs_f64(),
        "p99_limit_ms": args.ramp_p99_ms,
        "highest_sustained": best,
        "steps": steps,
        "errors": stats.errors.load(std::sync::atomic::Ordering::Relaxed),
    }))
}

async fn idle(args: &Args) -> anyhow::Result<Value> {
    let stats = Stats::new();
    let (clients, connect_time) = connect_all(args, &stats).await?;
    let count = clients.len();
    let (stop, stop_rx) = watch::channel(false);
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(c.hold(stop_rx.clone())))
        .collect();
    // Tell the caller (the benchmark script) when all are up.
    eprintln!("idle: {count} connections open");
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    let _ = stop.send(true);
    let mut dropped = 0u64;
    for task in tasks {
        if !matches!(task.await, Ok(Ok(()))) {
            dropped += 1;
        }
    }
    Ok(json!({
        "mode": "idle",
        "lists": args.lists,
        "clients_per_list": args.clients,
        "connections": count,
        "connect_seconds": connect_time.as_secs_f64(),
        "held_seconds": args.duration,
        "dropped_while_held": dropped,
        "errors": stats.errors.load(std::sync::atomic::Ordering::Relaxed),
    }))
}

async fn coldload_build(args: &Args) -> anyhow::Result<Value> {
    let stats = Stats::new();
    let mut lists = Vec::new();
    let ids = new_lists(args).await?;
    let started = Instant::now();
    for list in ids {
        let doc = Doc::new();
        let peers = Arc::new(ListPeers {
            senders: vec![SenderLog::new(doc.client_id())],
        });
        let client = Client::connect(&args.url(0, list), 0, doc, peers, stats.clone()).await?;
        let items = client.write_history(args.history, args.max_items).await?;
        lists.push(json!({ "list": list, "items": items }));
    }
    // The token goes with the lists: `coldload` opens them as the same user.
    let built = json!({ "history": args.history, "lists": lists, "token": args.token });
    std::fs::write(&args.lists_file, serde_json::to_vec_pretty(&built)?)?;
    Ok(json!({
        "mode": "coldload-build",
        "lists": args.lists,
        "edits_per_list": args.history,
        "max_items": args.max_items,
        "seconds": started.elapsed().as_secs_f64(),
        "lists_file": args.lists_file,
    }))
}

async fn coldload(args: &Args) -> anyhow::Result<Value> {
    let built: Value = serde_json::from_slice(&std::fs::read(&args.lists_file)?)?;
    let mut args = args.clone();
    if args.token.is_empty() {
        args.token = built["token"].as_str().unwrap_or_default().to_owned();
    }
    let args = &args;
    let stats = Stats::new();
    let mut times_ms = Vec::new();
    let mut sync_ms = Vec::new();
    let mut apply_ms = Vec::new();
    for entry in built["lists"].as_array().into_iter().flatten() {
        let list: Uuid = entry["list"].as_str().unwrap_or_default().parse()?;
        let expected = entry["items"].as_u64().unwrap_or(0) as usize;
        let doc = Doc::new();
        let peers = Arc::new(ListPeers {
            senders: vec![SenderLog::new(doc.client_id())],
        });
        let started = Instant::now();
        let client = Client::connect(&args.url(0, list), 0, doc, peers, stats.clone()).await?;
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(
            client.item_count() == expected,
            "list {list}: {} items after the first sync, expected {expected}",
            client.item_count()
        );
        times_ms.push(elapsed);
        let timing = client.first_sync();
        sync_ms.push(timing.total.as_secs_f64() * 1000.0);
        apply_ms.push(timing.applying.as_secs_f64() * 1000.0);
    }
    let median = |values: &[f64]| {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted.get(sorted.len() / 2).copied()
    };
    let max = |values: &[f64]| values.iter().copied().reduce(f64::max);
    Ok(json!({
        "mode": "coldload",
        "history": built["history"],
        "lists": times_ms.len(),
        // From opening the socket (TCP, upgrade, token and membership
        // checks) to the full state.
        "first_full_state_ms": times_ms,
        "median_ms": median(&times_ms),
        "max_ms": max(&times_ms),
        // From the client's first message (sync step 1) to its full state:
        // the server loads the list and answers, the client applies it.
        "first_message_to_full_state_ms": sync_ms,
        "first_message_median_ms": median(&sync_ms),
        "first_message_max_ms": max(&sync_ms),
        // Of that, the client's own decoding and applying of the state.
        "client_apply_ms": apply_ms,
        "client_apply_median_ms": median(&apply_ms),
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if let (Some(api), false) = (&args.api, args.mode == Mode::Coldload) {
        let provisioner = provision::Provisioner::sign_up(api).await?;
        args.token = provisioner.token.clone();
        args.provisioner = Some(provisioner);
    }
    anyhow::ensure!(
        args.clients >= 1 && args.lists >= 1,
        "need at least one list and client"
    );
    let cpu_start = own_cpu_seconds();
    let mut report = match args.mode {
        Mode::Fixed => fixed(&args).await?,
        Mode::Ramp => ramp(&args).await?,
        Mode::Idle => idle(&args).await?,
        Mode::ColdloadBuild => coldload_build(&args).await?,
        Mode::Coldload => coldload(&args).await?,
    };
    report["loadgen_cpu_seconds_total"] = json!(own_cpu_seconds() - cpu_start);
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
