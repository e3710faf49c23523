//! Admission under load, over TLS with keep-alive, against the floor.
//!
//! Starts `bucketgate serve` (the release binary beside this example) with the fixture
//! catalog plus 10,000 BucketContents and 1,000 BucketClasses, and a floor server: axum and
//! rustls like bucketgate, answering every review with a fixed "allowed" without decoding
//! it. Sends each the same mix of captured reviews (a Bucket CREATE that gets a default
//! class, label and finalizer; a BucketClass UPDATE that is denied; a Bucket CREATE bound to
//! a shared BucketContent) over a fixed number of connections, and prints requests per
//! second, latency percentiles (and the p99 of each review), errors, the ratios to the
//! floor, the CPU time each process spent per review, and bucketgate's peak RSS.
//!
//! `cargo build --release --bins --examples && target/release/examples/loadgen [--as-stored] [--rate N] [--floor-reads-json] [CONNECTIONS] [REQUESTS | TIME]`:
//! 32 connections and 50,000 requests to each server unless told otherwise; a time such as
//! `30s` runs each server for that long instead. `--floor-reads-json` has the floor read
//! each review through as JSON before its fixed answer, as any webhook that reads its
//! reviews must: what bucketgate spends beyond that is its own.
//!
//! Without `--rate`, each connection sends its next request when the last is answered: the
//! servers run flat out, and the rate is what they can do. With `--rate N`, the requests
//! are due at N a second over all connections, and each latency counts from when its
//! request was due: what a webhook adds to each write at a load it keeps up with.
//!
//! The reviews go as the API server writes them: compact JSON and a newline (its webhook
//! client encodes with apimachinery's JSON serializer, which indents only when asked to).
//! The fixtures are stored indented, half as many bytes again; `--as-stored` sends them so.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use bucketgate::server::{MUTATE_PATH, VALIDATE_PATH};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const FLOOR_ANSWER: &str =
    r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"","allowed":true}}"#;

/// Admission under load over TLS, against the floor (see BENCHMARKS.md).
#[derive(clap::Parser)]
struct Args {
    /// Keep-alive connections to each server.
    #[arg(default_value_t = 32)]
    connections: usize,
    /// Requests to each server, or a time to load each for, such as 30s.
    #[arg(default_value = "50000", value_parser = Amount::parse)]
    amount: Amount,
    /// Requests a second over all connections, each latency counted from when its request
    /// was due; without it, as fast as the servers answer.
    #[arg(long, value_parser = positive_rate)]
    rate: Option<f64>,
    /// Send the fixture files as stored, indented, rather than compact as on the wire.
    #[arg(long)]
    as_stored: bool,
    /// The floor reads each review through as JSON, keeping nothing, before its fixed
    /// answer: the least that any webhook reading its reviews does.
    #[arg(long)]
    floor_reads_json: bool,
    /// Serve as the floor with the serving certificate in this directory (how the load
    /// generator starts it).
    #[arg(long, hide = true)]
    floor: Option<PathBuf>,
}

fn positive_rate(value: &str) -> anyhow::Result<f64> {
    value
        .parse()
        .ok()
        .filter(|r: &f64| r.is_finite() && *r > 0.0)
        .with_context(|| format!("{value:?} is not a positive number of requests per second"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Args = clap::Parser::parse();
    if let Some(cert_dir) = &args.floor {
        return floor(cert_dir, args.floor_reads_json).await;
    }
    // A run cut short drops the servers it started, which stops them (see `Server`).
    tokio::select! {
        result = run(args) => result,
        signal = stop_signal() => anyhow::bail!("stopped by {signal} before the end of the run"),
    }
}

/// SIGTERM (`timeout`, `kill`) or SIGINT (Ctrl-C), whichever comes first.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        // Without the handlers the signals keep their default action, which ends the run.
        _ => std::future::pending().await,
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let Args { connections, amount, rate, as_stored, floor_reads_json, .. } = args;
    anyhow::ensure!(connections > 0, "CONNECTIONS must be at least 1");
    if let Amount::Requests(n) = amount {
        // The first request of each connection opens it and is not timed with the rest.
        let least = 2 * connections * ROUNDS;
        anyhow::ensure!(
            n >= least,
            "{n} requests leave some of {connections} connections nothing to time: at least {least}"
        );
    }
    let fixtures = std::env::var_os("BUCKETGATE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    let scratch = tempfile::tempdir()?;
    let certs = bucketgate::tls::generate(&["localhost".into()], &["127.0.0.1".parse()?], 1)?;
    certs.write(scratch.path())?;
    let catalog = scratch.path().join("catalog");
    write_catalog(&fixtures.join("catalog"), &catalog, 10_000, 1_000)
        .with_context(|| format!("copying the fixture catalog from {} (BUCKETGATE_FIXTURES)", fixtures.display()))?;

    let release = std::env::current_exe()?.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    let (bucketgate, gate_addr) = spawn(
        wrapped("BUCKETGATE_WRAP", &release.join("bucketgate"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--provisioner",
                "rook-ceph.ceph.rook.io/bucket",
            ])
            .arg("--cert-dir")
            .arg(scratch.path())
            .arg("--catalog")
            .arg(&catalog)
            // The deployed level unless RUST_LOG says otherwise; the line that names the
            // address is read whatever the level.
            .env("RUST_LOG", format!("{},bucketgate::cli=info", std::env::var("RUST_LOG").unwrap_or("info".into()))),
        &scratch.path().join("bucketgate.log"),
    )?;
    let mut floor_command = wrapped("FLOOR_WRAP", &std::env::current_exe()?);
    floor_command.arg("--floor").arg(scratch.path());
    if floor_reads_json {
        floor_command.arg("--floor-reads-json");
    }
    let (floor, floor_addr) = spawn(&mut floor_command, &scratch.path().join("floor.log"))?;

    let reviews: Arc<Vec<(String, Bytes)>> = Arc::new(
        REVIEWS
            .iter()
            .map(|(name, webhook)| {
                let path = fixtures.join("admission-reviews").join(format!("{name}.json"));
                let stored = std::fs::read(&path)
                    .with_context(|| format!("reading {} (BUCKETGATE_FIXTURES)", path.display()))?;
                let body = if as_stored {
                    stored
                } else {
                    wire_form(&stored).with_context(|| format!("{}", path.display()))?
                };
                // With the timeout query the API server adds to a webhook's URL.
                Ok((format!("{webhook}?timeout=5s"), Bytes::from(body)))
            })
            .collect::<anyhow::Result<_>>()?,
    );
    let load = Load { tls: tls_config(&certs.ca_pem), connections, rate, reviews };
    println!(
        "machine: {} cores; {connections} connections, {amount} to each server in {ROUNDS} alternating rounds, after 2,000 requests to warm up",
        num_cpus()
    );
    match rate {
        Some(rate) => {
            println!("pace: {rate} requests a second, each request due at its time (latency counted from then)")
        }
        None => println!("pace: as fast as the servers answer, a request at a time on each connection"),
    }
    println!(
        "floor: {}",
        if floor_reads_json {
            "reads each review through as JSON (serde_json, nothing kept), then a fixed answer"
        } else {
            "a fixed answer, the review unread"
        }
    );
    let sizes: Vec<String> = load.reviews.iter().map(|(_, body)| body.len().to_string()).collect();
    println!(
        "bodies: {} ({} bytes)",
        if as_stored { "as stored, indented" } else { "compact, as the API server sends them" },
        sizes.join(", ")
    );
    let started_memory = memory(bucketgate.id());
    // Alternating rounds, so that a slow spell of a shared machine falls on both servers.
    let (mut floor_rounds, mut gate_rounds) = (Vec::new(), Vec::new());
    load.send(floor_addr, Amount::Requests(2_000)).await;
    load.send(gate_addr, Amount::Requests(2_000)).await;
    let cpu_before = [cpu_time(floor.id()), cpu_time(bucketgate.id()), cpu_time(std::process::id())];
    // The load generator's own time, apart for each server: its work per review differs
    // with the answers it reads (the floor's are a few bytes).
    let mut own = [Duration::ZERO; 2];
    for _ in 0..ROUNDS {
        for (i, (addr, rounds)) in
            [(floor_addr, &mut floor_rounds), (gate_addr, &mut gate_rounds)].into_iter().enumerate()
        {
            let before = cpu_time(std::process::id());
            rounds.push(load.send(addr, amount.per_round()).await);
            own[i] += cpu_time(std::process::id()).since(before).total();
        }
    }
    let cpu = [cpu_time(floor.id()), cpu_time(bucketgate.id()), cpu_time(std::process::id())];
    let ratios: Vec<f64> = gate_rounds.iter().zip(&floor_rounds).map(|(g, f)| g.rate() / f.rate()).collect();
    let (floor_run, gate_run) = (Figures::of(floor_rounds), Figures::of(gate_rounds));
    println!("latency of requests on open connections (the first of each connection: below)");
    println!("{:<10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}", "server", "req/s", "p50", "p90", "p99", "max", "errors");
    for (name, r) in [("floor", &floor_run), ("bucketgate", &gate_run)] {
        println!(
            "{name:<10} {:>10.0} {:>9.3?} {:>9.3?} {:>9.3?} {:>9.3?} {:>7}",
            r.rate, r.p50, r.p90, r.p99, r.max, r.errors
        );
    }
    for (name, r) in [("floor", &floor_run), ("bucketgate", &gate_run)] {
        if let Some(failure) = &r.failure {
            println!("{name}: {} failed requests, the first: {failure}", r.errors);
        }
    }
    for (name, r) in [("floor", &floor_run), ("bucketgate", &gate_run)] {
        println!(
            "{name} first request of a connection, TLS handshake included ({} of them): p50 {:.3?}, max {:.3?}",
            r.first.len(),
            percentile(&r.first, 0.5),
            r.first.last().copied().unwrap_or_default()
        );
    }
    for (name, r) in [("floor", &floor_run), ("bucketgate", &gate_run)] {
        let by_review: Vec<String> =
            REVIEWS.iter().zip(r.p99_by_review).map(|((name, _), p99)| format!("{name} {p99:.3?}")).collect();
        println!("{name} p99 by review: {}", by_review.join(", "));
    }
    println!(
        "bucketgate / floor: throughput {:.2} (rounds {}), p99 {:.2}",
        gate_run.rate / floor_run.rate,
        ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" "),
        gate_run.p99.as_secs_f64() / floor_run.p99.as_secs_f64()
    );
    // Both servers and the load generator share the machine's cores: what each spends per
    // review says more than the rates, which move with whatever else the machine runs.
    let per_review = |which: usize, reviews: usize| cpu[which].since(cpu_before[which]).per(reviews);
    let (floor_cpu, gate_cpu) = (per_review(0, floor_run.count), per_review(1, gate_run.count));
    println!(
        "CPU per review, user + system: floor {floor_cpu}, bucketgate {gate_cpu} ({:.2} times the floor's), load generator {}",
        gate_cpu.total().as_secs_f64() / floor_cpu.total().as_secs_f64(),
        per_review(2, floor_run.count + gate_run.count)
    );
    let per = |time: Duration, count: usize| time / u32::try_from(count.max(1)).unwrap_or(u32::MAX);
    let (lg_floor, lg_gate) = (per(own[0], floor_run.count), per(own[1], gate_run.count));
    println!(
        "CPU per review with the load generator's own: floor {:.1?} ({:.1?} of it the load generator's), bucketgate {:.1?} ({:.1?}); a rate bound by the cores would be {:.2} of the floor's",
        floor_cpu.total() + lg_floor,
        lg_floor,
        gate_cpu.total() + lg_gate,
        lg_gate,
        (floor_cpu.total() + lg_floor).as_secs_f64() / (gate_cpu.total() + lg_gate).as_secs_f64()
    );
    let (peak, now) = memory(bucketgate.id());
    println!(
        "bucketgate RSS with 10,000 BucketContents and 1,000 BucketClasses: peak {peak}, after the load {now} (after start: peak {}, {})",
        started_memory.0, started_memory.1
    );
    println!("bucketgate answered {} reviews in all", 2_000 + gate_run.count);
    bucketgate.terminate();
    floor.terminate();
    Ok(())
}

/// A command for `program`, run under the program and arguments that the environment
/// variable `wrap` names, if set: `BUCKETGATE_WRAP` and `FLOOR_WRAP` run a server under
/// valgrind, say (BENCHMARKS.md).
fn wrapped(wrap: &str, program: &Path) -> std::process::Command {
    let wrap: Vec<String> = std::env::var(wrap).unwrap_or_default().split_whitespace().map(String::from).collect();
    match wrap.split_first() {
        Some((wrapper, args)) => {
            let mut command = std::process::Command::new(wrapper);
            command.args(args).arg(program);
            command
        }
        None => std::process::Command::new(program),
    }
}

/// A server the load generator started. Dropping it kills the server, so that none
/// outlives a run that ends early: an error, or a SIGTERM, which reaches this process
/// alone (Ctrl-C reaches the whole process group). A SIGKILL runs no drop: for that, the
/// kernel ends the servers (`ends_with_this_thread`).
struct Server(std::process::Child);

impl Server {
    fn id(&self) -> u32 {
        self.0.id()
    }

    /// SIGTERM, and a wait for the exit: bucketgate ends as it would in a cluster, and a
    /// wrapper such as valgrind writes what it has to write.
    fn terminate(mut self) {
        // SAFETY: kill(2) with a pid of a child not yet waited for, so not one reused.
        unsafe { libc::kill(self.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Both fail harmlessly on a server that has already exited and been waited for.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Peak (VmHWM) and current (VmRSS) resident memory of a process, as /proc says them.
fn memory(pid: u32) -> (String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or("unknown".into())
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// CPU time in user space and in the kernel.
#[derive(Clone, Copy)]
struct Cpu {
    user: Duration,
    system: Duration,
}

impl Cpu {
    fn since(self, before: Cpu) -> Cpu {
        Cpu { user: self.user.saturating_sub(before.user), system: self.system.saturating_sub(before.system) }
    }

    fn per(self, reviews: usize) -> Cpu {
        let reviews = reviews.max(1) as u32;
        Cpu { user: self.user / reviews, system: self.system / reviews }
    }

    fn total(self) -> Duration {
        self.user + self.system
    }
}

impl std::fmt::Display for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = |d: Duration| d.as_secs_f64() * 1e6;
        write!(f, "{:.1}µs = {:.1} + {:.1}", micros(self.total()), micros(self.user), micros(self.system))
    }
}

/// User and system CPU time of a process and all its threads so far, from /proc.
fn cpu_time(pid: u32) -> Cpu {
    cpu_of(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// The CPU times in a line of `/proc/PID/stat`.
fn cpu_of(stat: &str) -> Cpu {
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    // utime and stime, the 14th and 15th fields, in USER_HZ ticks, which are 1/100 s on Linux.
    let ticks = |i: usize| Duration::from_millis(10 * fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0));
    Cpu { user: ticks(11), system: ticks(12) }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

const ROUNDS: usize = 5;

/// How much load each server gets: a number of requests, or a time.
#[derive(Clone, Copy)]
enum Amount {
    Requests(usize),
    Time(Duration),
}

impl Amount {
    fn parse(arg: &str) -> anyhow::Result<Amount> {
        let amount = match arg.parse() {
            Ok(requests) => Amount::Requests(requests),
            Err(_) => Amount::Time(
                humantime::parse_duration(arg)
                    .with_context(|| format!("{arg:?} is neither a number of requests nor a time such as 30s"))?,
            ),
        };
        match amount {
            Amount::Time(t) if t.is_zero() => anyhow::bail!("a time of zero sends nothing"),
            _ => Ok(amount),
        }
    }

    fn per_round(self) -> Amount {
        match self {
            Amount::Requests(n) => Amount::Requests(n / ROUNDS),
            Amount::Time(t) => Amount::Time(t / ROUNDS as u32),
        }
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Amount::Requests(n) => write!(f, "{n} requests"),
            Amount::Time(t) => write!(f, "{}", humantime::format_duration(*t)),
        }
    }
}

/// The captured reviews of the mix, sent in turn, and the webhook each goes to.
const REVIEWS: [(&str, &str); 3] = [
    ("009-mutate-Bucket-CREATE", MUTATE_PATH),
    ("016-validate-BucketClass-UPDATE", VALIDATE_PATH),
    ("014-validate-Bucket-CREATE", VALIDATE_PATH),
];

/// A stored review as the API server sends it: compact, the members in the same order, and
/// the newline Go's JSON encoder ends with. Checked to say the same as the stored text.
fn wire_form(stored: &[u8]) -> anyhow::Result<Vec<u8>> {
    // Transcoded token by token: a round trip through `Value` would sort the members.
    let mut wire = Vec::with_capacity(stored.len());
    serde_transcode::transcode(
        &mut serde_json::Deserializer::from_slice(stored),
        &mut serde_json::Serializer::new(&mut wire),
    )?;
    wire.push(b'\n');
    let (read, sent): (Value, Value) = (serde_json::from_slice(stored)?, serde_json::from_slice(&wire)?);
    anyhow::ensure!(read == sent, "the compact form of the review says something else than the stored one");
    Ok(wire)
}

/// The figures of one server over all rounds: the median round's rate, and latency
/// percentiles over every request on an open connection.
struct Figures {
    /// Every answered request, the first of each connection included.
    count: usize,
    rate: f64,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
    errors: usize,
    /// Why the first failed request failed.
    failure: Option<String>,
    /// p99 of each review of the mix alone, in the order of [`REVIEWS`].
    p99_by_review: [Duration; REVIEWS.len()],
    /// The latencies of the first request of each connection, sorted.
    first: Vec<Duration>,
}

impl Figures {
    fn of(rounds: Vec<Round>) -> Figures {
        let mut rates: Vec<f64> = rounds.iter().map(Round::rate).collect();
        rates.sort_by(f64::total_cmp);
        let errors = rounds.iter().map(|r| r.errors).sum();
        let failure = rounds.iter().find_map(|r| r.failure.clone());
        let mut first: Vec<Duration> = rounds.iter().flat_map(|r| r.first.iter().copied()).collect();
        first.sort();
        let mut latencies: Vec<(usize, Duration)> = rounds.into_iter().flat_map(|r| r.latencies).collect();
        latencies.sort_by_key(|&(_, latency)| latency);
        let all: Vec<Duration> = latencies.iter().map(|&(_, latency)| latency).collect();
        let p99_by_review = std::array::from_fn(|review| {
            let of_review: Vec<Duration> =
                latencies.iter().filter(|&&(which, _)| which == review).map(|&(_, latency)| latency).collect();
            percentile(&of_review, 0.99)
        });
        Figures {
            count: all.len() + first.len(),
            rate: rates.get(rates.len() / 2).copied().unwrap_or_default(),
            p50: percentile(&all, 0.50),
            p90: percentile(&all, 0.90),
            p99: percentile(&all, 0.99),
            max: all.last().copied().unwrap_or_default(),
            errors,
            failure,
            p99_by_review,
            first,
        }
    }
}

/// The `q` quantile of sorted latencies.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted.get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1))).copied().unwrap_or_default()
}

/// What a round's connections sent, or one connection's.
#[derive(Default)]
struct Round {
    /// Each answered request on an open connection: which review of the mix it was, and how
    /// long it took.
    latencies: Vec<(usize, Duration)>,
    /// The first request of each connection: it waits for the TLS handshake, which the API
    /// server's kept-alive connections do once.
    first: Vec<Duration>,
    errors: usize,
    /// Why the first failed request failed.
    failure: Option<String>,
    /// From the moment every connection was open to the last answer.
    elapsed: Duration,
}

impl Round {
    /// Counts `count` requests as failed, keeping the first cause.
    fn failed(&mut self, count: usize, error: &anyhow::Error) {
        self.errors += count;
        self.failure.get_or_insert_with(|| format!("{error:#}"));
    }

    fn add(&mut self, other: Round) {
        self.latencies.extend(other.latencies);
        self.first.extend(other.first);
        self.errors += other.errors;
        self.failure = self.failure.take().or(other.failure);
    }

    /// Answers a second on open connections: the handshakes at the start of a round are
    /// left out, as they are from the latencies.
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// What every round sends: the reviews in turn, over a fixed number of connections.
struct Load {
    tls: Arc<rustls::ClientConfig>,
    connections: usize,
    /// Requests a second over all connections, or `None` for as fast as the server answers.
    rate: Option<f64>,
    /// Each review's path and body.
    reviews: Arc<Vec<(String, Bytes)>>,
}

impl Load {
    /// `amount` of requests over `connections` keep-alive connections: the
    /// requests shared out between them, or as many as each sends in the time. Each
    /// connection first sends one request to open itself (timed apart); the rest wait until
    /// all are open.
    async fn send(&self, addr: SocketAddr, amount: Amount) -> Round {
        let open = Arc::new(tokio::sync::Barrier::new(self.connections + 1));
        let mut tasks = Vec::new();
        for c in 0..self.connections {
            let (tls, reviews, open) = (self.tls.clone(), self.reviews.clone(), open.clone());
            let share = match amount {
                Amount::Requests(n) => n / self.connections + usize::from(c < n % self.connections),
                Amount::Time(_) => usize::MAX,
            };
            // With a rate, connection `c` sends its requests `interval` apart, `c` slots after
            // the first connection.
            let interval = self.rate.map(|rate| Duration::from_secs_f64(self.connections as f64 / rate));
            let offset = self.rate.map_or(Duration::ZERO, |rate| Duration::from_secs_f64(c as f64 / rate));
            // What a connection had left from its `sent`th request on, when it failed for
            // good: all of it, or for a time's worth, one.
            let left = move |sent: usize| if let Amount::Requests(_) = amount { share - sent } else { 1 };
            tasks.push(tokio::spawn(async move {
                let mut round = Round { latencies: Vec::with_capacity(share.min(1 << 16)), ..Round::default() };
                if share == 0 {
                    open.wait().await;
                    return round;
                }
                let opened = Instant::now();
                let mut connection = match Connection::open(addr, tls).await {
                    Ok(connection) => connection,
                    Err(error) => {
                        round.failed(left(0), &error.context("opening a connection"));
                        open.wait().await;
                        return round;
                    }
                };
                let (path, body) = &reviews[c % reviews.len()];
                match connection.post(path, body).await {
                    Ok(()) => round.first.push(opened.elapsed()),
                    Err(error) => round.failed(1, &error),
                }
                open.wait().await;
                let start = Instant::now();
                let deadline = match amount {
                    Amount::Time(t) => Some(start + t),
                    Amount::Requests(_) => None,
                };
                let mut answered = start;
                for i in 1..share {
                    let which = (c + i) % reviews.len();
                    let due = interval.map(|interval| start + offset + interval.mul_f64((i - 1) as f64));
                    if deadline.is_some_and(|d| due.unwrap_or_else(Instant::now) >= d) {
                        break;
                    }
                    // A request held back by a late answer counts from when it was due, so
                    // that a slow server is not let off by sending it less; one held back only
                    // by the timer (a millisecond's grain) counts from when it went.
                    let from = match due {
                        Some(due) if answered > due => due,
                        Some(due) => {
                            tokio::time::sleep_until(due.into()).await;
                            Instant::now()
                        }
                        None => Instant::now(),
                    };
                    let (path, body) = &reviews[which];
                    let sent = connection.post(path, body).await;
                    answered = Instant::now();
                    match sent {
                        Ok(()) => round.latencies.push((which, answered - from)),
                        Err(error) if connection.closed() => {
                            round.failed(left(i), &error);
                            break;
                        }
                        Err(error) => round.failed(1, &error),
                    }
                }
                round
            }));
        }
        open.wait().await;
        let started = Instant::now();
        let mut round = Round::default();
        for task in tasks {
            match task.await {
                Ok(sent) => round.add(sent),
                Err(error) => round.failed(1, &anyhow::anyhow!("a connection's task failed: {error}")),
            }
        }
        round.elapsed = started.elapsed();
        round
    }
}

/// One kept-alive HTTP/1.1 connection over TLS, as the API server keeps to a webhook: one
/// request at a time.
///
/// hyper's connection is driven by the task that sends on it rather than a task of its own
/// (as a pooled client such as reqwest does): the load generator shares the servers' cores,
/// and a hop between tasks for every request and answer cost it 1.7 to 2 times the floor's
/// CPU per review, taken from the servers it measures.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    /// `None` once the connection has closed.
    driver: Option<Pin<Box<Driver>>>,
}

/// What reads and writes a connection's bytes; it makes progress only while polled.
type Driver = hyper::client::conn::http1::Connection<TokioIo<TlsStream<TcpStream>>, Full<Bytes>>;

impl Connection {
    async fn open(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<Connection> {
        let tcp = TcpStream::connect(addr).await?;
        // As the API server's client (Go's net/http) does: each request goes out at once.
        tcp.set_nodelay(true)?;
        let server = rustls::pki_types::ServerName::try_from("localhost")?;
        let stream = tokio_rustls::TlsConnector::from(tls).connect(server, tcp).await?;
        let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        Ok(Connection { sender, driver: Some(Box::pin(driver)) })
    }

    /// Whether the connection is gone: it ended while polled, or hyper found it closed.
    fn closed(&self) -> bool {
        self.driver.is_none() || self.sender.is_closed()
    }

    /// POSTs a review to `path` and reads the answer to its end: an error unless it is a
    /// success.
    async fn post(&mut self, path: &str, body: &Bytes) -> anyhow::Result<()> {
        let Connection { sender, driver } = self;
        let Some(running) = driver else { anyhow::bail!("the connection is closed") };
        let exchange = async {
            sender.ready().await?;
            let request = http::Request::post(path)
                .header(http::header::HOST, "localhost")
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()))?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let answer = response.into_body().collect().await?.to_bytes();
            // Decoded only to be shown: a success's answer is not read, the floor's or bucketgate's.
            anyhow::ensure!(
                status.is_success(),
                "{path} answered {status}: {:.200}",
                String::from_utf8_lossy(&answer).trim()
            );
            Ok(())
        };
        tokio::select! {
            biased;
            answer = exchange => answer,
            ended = running.as_mut() => {
                *driver = None;
                match ended {
                    Ok(()) => anyhow::bail!("the server closed the connection"),
                    Err(error) => Err(anyhow::Error::new(error).context("the connection failed")),
                }
            }
        }
    }
}

fn tls_config(ca: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.as_bytes()).expect("CA")).expect("CA");
    let config = rustls::ClientConfig::builder_with_provider(bucketgate::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Starts a server process with its standard error written to the file `log`, and reads
/// its address from the first JSON log line there naming one.
///
/// A file, not a pipe that this process reads: in a cluster a container's log is read by
/// the node's runtime, not by the API server this process stands for. A reader here spent
/// CPU on each refusal's log line, counted as the load generator's against bucketgate
/// alone; little (bucketgate writes its lines in batches), but not the client's work.
/// bucketgate still makes its writes.
fn spawn(command: &mut std::process::Command, log: &Path) -> anyhow::Result<(Server, SocketAddr)> {
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let command = ends_with_this_thread(command).stderr(file).stdout(std::process::Stdio::null());
    let mut server = Server(command.spawn()?);
    loop {
        let said = std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
        // A line being written is not yet valid JSON, and is read again at the next look.
        for line in said.lines() {
            let log: Value = serde_json::from_str(line).unwrap_or_default();
            if let Some(address) = log["fields"]["address"].as_str().or(log["address"].as_str()) {
                return Ok((server, address.parse()?));
            }
        }
        if let Some(status) = server.0.try_wait()? {
            anyhow::bail!("the server exited ({status}) before listening:\n{said}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Has the kernel send the process SIGTERM when the thread that starts it ends (the main
/// thread, for the servers): a SIGKILL of the load generator runs no `Drop`, and its
/// servers would otherwise outlive it.
fn ends_with_this_thread(command: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: between fork and exec the closure only makes two system calls, both
    // async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the request was made: then no signal comes.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other("the load generator ended as the server started"));
            }
            Ok(())
        })
    }
}

/// The floor: the same stack, a fixed answer, and no decoding unless `reads_json`.
async fn floor(cert_dir: &Path, reads_json: bool) -> anyhow::Result<()> {
    let store = bucketgate::tls::CertStore::open(cert_dir)?;
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(bucketgate::tls::server_config(store)?));
    let answer = if reads_json {
        post(|body: Bytes| async move { read_then_allow(&body) })
    } else {
        post(|| async { FLOOR_ANSWER })
    };
    let app = Router::new().route(MUTATE_PATH, answer.clone()).route(VALIDATE_PATH, answer);
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    eprintln!("{}", json!({"address": listener.local_addr()?.to_string()}));
    bucketgate::server::https(listener, tls)?.serve(app.into_make_service()).await?;
    Ok(())
}

/// The floor's answer when it reads the review: the fixed one, if the body is JSON.
fn read_then_allow(body: &[u8]) -> (StatusCode, &'static str) {
    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Ok(_) => (StatusCode::OK, FLOOR_ANSWER),
        Err(_) => (StatusCode::BAD_REQUEST, "not JSON"),
    }
}

/// The fixture catalog plus `contents` BucketContents and `classes` BucketClasses.
fn write_catalog(fixtures: &Path, to: &Path, contents: usize, classes: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(fixtures)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    // Files of 500 documents: a catalog file is parsed within a budget of 1,024.
    let mut documents = Vec::new();
    for i in 0..classes {
        documents.push(format!(
            "---\napiVersion: cosi.io/v1alpha1\nkind: BucketClass\nmetadata: {{name: class-{i}}}\nprovisioner: rook-ceph.ceph.rook.io/bucket\nsupportedProtocols: [s3]\nparameters: {{objectStoreName: store-{i}}}\n"
        ));
    }
    for i in 0..contents {
        documents.push(format!(
            "---\napiVersion: cosi.io/v1alpha1\nkind: BucketContent\nmetadata: {{name: content-{i}, labels: {{cosi.io/provisioner: rook-ceph.ceph.rook.io-bucket}}}}\nspec:\n  provisioner: rook-ceph.ceph.rook.io/bucket\n  releasePolicy: Delete\n  bucketClassName: class-{}\n  bindableNamespaces: [{{name: team-{i}, uid: 00000000-0000-4000-8000-{i:012}}}]\n  protocol: {{type: s3, s3: {{bucketName: bucket-{i}, endpoint: 'https://s3.example', region: us-east-1}}}}\n  parameters: {{objectStoreName: store-{}}}\n",
            i % classes.max(1),
            i % classes.max(1)
        ));
    }
    for (n, chunk) in documents.chunks(500).enumerate() {
        std::fs::write(to.join(format!("generated-{n}.yaml")), chunk.concat())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_amount_is_a_number_of_requests_or_a_time_that_is_not_zero() {
        assert!(matches!(Amount::parse("50000"), Ok(Amount::Requests(50_000))));
        assert!(matches!(Amount::parse("30s"), Ok(Amount::Time(t)) if t == Duration::from_secs(30)));
        let refused = |arg: &str| Amount::parse(arg).err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(refused("abc").starts_with("\"abc\" is neither a number of requests nor a time"), "{}", refused("abc"));
        assert_eq!(refused("0s"), "a time of zero sends nothing");
        assert!(matches!(Amount::Requests(50_000).per_round(), Amount::Requests(10_000)));
    }

    #[test]
    fn the_floor_that_reads_allows_json_and_refuses_what_is_not() {
        assert_eq!(
            read_then_allow(br#"{"request": {"uid": "u", "object": {"a": [1, "b\"c"]}}}"#),
            (StatusCode::OK, FLOOR_ANSWER)
        );
        for body in [&b"{\"request\": "[..], b"", b"not json", b"{\"a\": 1} trailing"] {
            assert_eq!(read_then_allow(body).0, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn a_rate_is_a_positive_finite_number() {
        assert_eq!(positive_rate("2000").unwrap(), 2000.0);
        assert_eq!(positive_rate("0.5").unwrap(), 0.5);
        for refused in ["0", "-5", "inf", "NaN", "x", ""] {
            let error = positive_rate(refused).unwrap_err().to_string();
            assert!(error.contains("is not a positive number of requests per second"), "{refused}: {error}");
        }
    }

    #[test]
    fn the_wire_form_is_compact_in_the_stored_order_with_a_newline() {
        let stored = b"{\n  \"kind\": \"AdmissionReview\",\n  \"apiVersion\": \"admission.k8s.io/v1\",\n  \"request\": {\"a b\": [1, 2.5, null]}\n}\n";
        let wire = wire_form(stored).unwrap();
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\",\"request\":{\"a b\":[1,2.5,null]}}\n"
        );
        assert!(wire_form(b"{\"kind\": ").is_err());
    }

    #[test]
    fn cpu_times_are_read_after_the_command_name_whatever_it_holds() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
        let stat = "4242 (tokio-rt (worker) 1) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 37 0 0 20 0 3 0";
        let cpu = cpu_of(stat);
        assert_eq!((cpu.user, cpu.system), (Duration::from_millis(2500), Duration::from_millis(370)));
        let per = cpu.since(cpu_of("")).per(1000);
        assert_eq!(per.total(), Duration::from_micros(2870));
        assert_eq!(per.to_string(), "2870.0µs = 2500.0 + 370.0");
        assert_eq!(cpu_of("").since(cpu).total(), Duration::ZERO);
    }

    #[test]
    fn a_dropped_server_is_stopped_and_waited_for() {
        let server = Server(std::process::Command::new("sleep").arg("600").spawn().unwrap());
        let proc_dir = PathBuf::from(format!("/proc/{}", server.id()));
        assert!(proc_dir.exists());
        drop(server);
        // Killed and reaped: not even a zombie is left under its pid.
        assert!(!proc_dir.exists());
    }

    #[test]
    fn a_server_ends_when_the_thread_that_started_it_ends() {
        // A `Server`, so that whatever fails below, dropping it stops `sleep`.
        let mut server = std::thread::spawn(|| {
            Server(ends_with_this_thread(std::process::Command::new("sleep").arg("600")).spawn().unwrap())
        })
        .join()
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = server.0.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "sleep was still running 10 s after the thread that started it ended");
            std::thread::sleep(Duration::from_millis(10));
        };
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }
}
