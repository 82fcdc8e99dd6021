//! restrictor against its ceiling, in one run: `cargo bench --bench load [-- FLAGS]`.
//!
//! Starts, in this process, restrictor's server with the real handler and the built-in policy,
//! and the same TLS + HTTP stack with the ceiling handler (parses the whole review, answers
//! `allowed` with the uid). Drives both the way kube-apiserver does: HTTP/1.1 keep-alive over TLS
//! verified against a CA generated at start, SNI `restrictor.restrictor-system.svc`,
//! `POST /mutate?timeout=10s`, the Rancher agent Deployment's AdmissionReview; one connection per
//! concurrent client; and HTTP/2 (ALPN h2), one connection with one stream per client. The two
//! servers alternate in short windows (ceiling, restrictor, restrictor, ceiling, ...) so the
//! shared machine's noise hits both. Then, with the built binary as its own process: peak RSS
//! under 64-concurrency load and start → `/readyz` 200.
//!
//! Flags:
//!   --duration SECS        measured time per server per row (default 4; split in windows)
//!   --concurrency LIST     comma-separated, default 1,16,64 (HTTP/2 rows use those >= 2)
//!   --windows N            windows per server per row (default 4)
//!   --client-threads N     load client's runtime threads (default 1: see CPU budget below)
//!   --starts N             process starts timed (default 10)
//!   --no-process           skip the separate-process measurements
//!   --smoke                a quick run (about 2 s of load), as the CI smoke does
//!   --object NAME          the reviewed object: `agent-deployment` (default: the unmutated Rancher
//!                          agent Deployment as `kubectl apply` first creates it, 18 changes),
//!                          `agent-deployment-update` (the same Deployment as restrictor admitted it,
//!                          updated: what every later apply or rollout sends; no patch) or
//!                          `compliant-pod` (the agent pod made from the mutated template; no patch)
//!
//! CPU budget: client and servers share the machine's cores. The servers run on a 2-worker
//! runtime (what restrictor uses on a 2-core node); the client runs on one thread of its own
//! (current-thread runtime) so it can never take more than one core from the server, and the
//! table reports the client's CPU share and the server's CPU per request so that a
//! client-bound row can be recognised as such.

#[path = "driver.rs"]
mod driver;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use driver::{
    Clients, InProcess, Pki, Process, Proto, ReviewTemplate, Stats, Tally, TempDir, ceiling_review,
    threads_cpu,
};

struct Options {
    duration: Duration,
    concurrency: Vec<usize>,
    windows: u32,
    client_threads: usize,
    starts: usize,
    process: bool,
    warmup: Duration,
    object: Object,
}

/// Which AdmissionReview the load sends.
#[derive(Clone, Copy)]
enum Object {
    AgentDeployment,
    AgentDeploymentUpdate,
    CompliantPod,
}

impl Object {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "agent-deployment" => Self::AgentDeployment,
            "agent-deployment-update" => Self::AgentDeploymentUpdate,
            "compliant-pod" => Self::CompliantPod,
            _ => return None,
        })
    }

    fn review(self) -> ReviewTemplate {
        match self {
            Self::AgentDeployment => ReviewTemplate::rancher_agent(),
            Self::AgentDeploymentUpdate => ReviewTemplate::rancher_agent_update(),
            Self::CompliantPod => ReviewTemplate::compliant_agent_pod(),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::AgentDeployment => {
                "the unmutated Rancher cattle-cluster-agent Deployment (CREATE)"
            }
            Self::AgentDeploymentUpdate => {
                "the cattle-cluster-agent Deployment as admitted (UPDATE, steady state, no patch)"
            }
            Self::CompliantPod => "the compliant agent pod (CREATE, steady state, no patch)",
        }
    }
}

/// `text` as a number above zero, or the usage message `error`.
fn positive<T: std::str::FromStr + PartialOrd + Default>(text: &str, error: &str) -> T {
    text.parse()
        .ok()
        .filter(|n| *n > T::default())
        .unwrap_or_else(|| usage(error))
}

fn usage(msg: &str) -> ! {
    eprintln!("load: {msg}");
    eprintln!(
        "usage: cargo bench --bench load -- [--duration SECS] [--concurrency 1,16,64] [--windows N] \
         [--client-threads N] [--starts N] [--no-process] [--smoke] [--object agent-deployment|agent-deployment-update|compliant-pod]"
    );
    std::process::exit(2)
}

fn parse_options() -> Option<Options> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Under `cargo nextest --all-targets` the bench binary is asked for its tests: it has none.
    if args.iter().any(|a| a == "--list") {
        return None;
    }
    let benching = args.iter().any(|a| a == "--bench");
    let smoke = args.iter().any(|a| a == "--smoke");
    if !benching && !smoke && args.is_empty() {
        // `cargo test --benches` runs bench targets without `--bench`: do nothing there.
        eprintln!("load: a benchmark; run it with `cargo bench --bench load`");
        return None;
    }
    let mut o = Options {
        duration: Duration::from_secs(4),
        concurrency: vec![1, 16, 64],
        windows: 4,
        client_threads: 1,
        starts: 10,
        process: true,
        warmup: Duration::from_millis(300),
        object: Object::AgentDeployment,
    };
    if smoke {
        o.duration = Duration::from_millis(200);
        o.concurrency = vec![1, 16];
        o.windows = 2;
        o.starts = 2;
        o.warmup = Duration::from_millis(50);
    }
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--bench" | "--smoke" => {}
            "--duration" => {
                let secs: f64 = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--duration takes seconds"));
                o.duration = Duration::from_secs_f64(secs);
            }
            "--concurrency" => {
                o.concurrency = value()
                    .split(',')
                    .map(|c| positive(c.trim(), "--concurrency takes numbers > 0"))
                    .collect();
            }
            "--windows" => {
                o.windows = positive(value(), "--windows takes a number > 0");
            }
            "--client-threads" => {
                o.client_threads = positive(value(), "--client-threads takes a number > 0");
            }
            "--starts" => {
                o.starts = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--starts takes a number"));
            }
            "--no-process" => o.process = false,
            "--object" => match Object::parse(value()) {
                Some(object) => o.object = object,
                None => usage(
                    "--object takes agent-deployment, agent-deployment-update or compliant-pod",
                ),
            },
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    Some(o)
}

fn main() {
    let Some(options) = parse_options() else {
        return;
    };
    restrictor::server::install_crypto_provider();
    // No tracing subscriber: neither server logs anything (the same for both).

    let tmp = TempDir::new("load");
    let pki = Pki::generate(tmp.path());
    let review = Arc::new(options.object.review());

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("srv")
        .enable_all()
        .build()
        .expect("server runtime");
    let client_rt = if options.client_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.client_threads)
            .thread_name("cli")
            .enable_all()
            .build()
    }
    .expect("client runtime");

    let ceiling = InProcess::start(&server_rt, &pki, ceiling_review);
    let restrictor = InProcess::start(&server_rt, &pki, restrictor::admission::review);

    println!(
        "restrictor load: AdmissionReview of {} ({} bytes), \
         {} s per server per row in {} alternating windows, client on {} thread(s), servers on a \
         2-worker runtime, {} CPUs",
        options.object.describe(),
        review.len(),
        options.duration.as_secs_f64(),
        options.windows * 2,
        options.client_threads,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );

    let mut rows = Vec::new();
    for &c in &options.concurrency {
        rows.push((Proto::H1, c));
    }
    for &c in &options.concurrency {
        if c >= 2 {
            rows.push((Proto::H2, c));
        }
    }

    let mut results = Vec::new();
    let mut all_errors = 0;
    for (proto, c) in rows {
        let [mut ceil, mut real] = client_rt.block_on(measure_row(
            &pki,
            &review,
            [ceiling.https, restrictor.https],
            proto,
            c,
            &options,
        ));
        for (name, t) in [("ceiling", &ceil), ("restrictor", &real)] {
            if let Some(e) = &t.first_error {
                eprintln!("{} c={c} {name}: first error: {e}", proto.label());
            }
        }
        let (cs, rs) = (ceil.stats(), real.stats());
        all_errors += cs.errors + rs.errors;
        results.push((proto, c, cs, rs));
    }
    ceiling.shutdown(&server_rt);
    restrictor.shutdown(&server_rt);

    print_table(&results);

    if options.process {
        println!();
        let bin = Path::new(env!("CARGO_BIN_EXE_restrictor"));
        process_measurements(bin, &pki, &review, &client_rt, &options);
    }
    if all_errors > 0 {
        std::process::exit(1);
    }
}

/// One row: both servers connected, warmed up, then alternating windows.
async fn measure_row(
    pki: &Pki,
    review: &Arc<ReviewTemplate>,
    addrs: [std::net::SocketAddr; 2],
    proto: Proto,
    concurrency: usize,
    o: &Options,
) -> [Tally; 2] {
    let mut clients = Vec::new();
    for addr in addrs {
        let mut cl = Clients::connect(addr, pki.client(proto), proto, concurrency)
            .await
            .expect("connect to the server");
        let _ = cl.run(review, o.warmup).await;
        clients.push(cl);
    }
    let mut tallies = [Tally::default(), Tally::default()];
    let window = o.duration / o.windows;
    for round in 0..o.windows {
        // ceiling, restrictor, restrictor, ceiling, ...: linear drift hits both equally.
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let (srv0, cli0) = (threads_cpu("srv", false), threads_cpu("srv", true));
            let w = clients[i].run(review, window).await;
            let (srv1, cli1) = (threads_cpu("srv", false), threads_cpu("srv", true));
            tallies[i].add(w, srv1.saturating_sub(srv0), cli1.saturating_sub(cli0));
        }
    }
    tallies
}

fn print_table(results: &[(Proto, usize, Stats, Stats)]) {
    println!();
    println!(
        "{:<5} {:>4}  {:<10} {:>9} {:>8} {:>8} {:>8} {:>7} {:>11} {:>8} | {:>9} {:>9} {:>9}",
        "proto",
        "conc",
        "server",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "srv µs/req",
        "cli CPU",
        "rps ratio",
        "p99 ratio",
        "CPU ratio"
    );
    let line = |proto: Proto, c: usize, name: &str, s: &Stats, ratios: Option<(f64, f64, f64)>| {
        let ratio = ratios.map_or_else(
            || format!("{:>9} {:>9} {:>9}", "", "", ""),
            |(r, p, cpu)| format!("{r:>9.3} {p:>9.3} {cpu:>9.2}"),
        );
        println!(
            "{:<5} {:>4}  {:<10} {:>9.0} {:>8.3} {:>8.3} {:>8.3} {:>7} {:>11.1} {:>7.0}% | {}",
            proto.label(),
            c,
            name,
            s.rps,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            s.errors,
            s.server_cpu_us_per_req,
            s.client_cpu_share * 100.0,
            ratio
        );
    };
    for (proto, c, cs, rs) in results {
        line(*proto, *c, "ceiling", cs, None);
        let ratios = (
            rs.rps / cs.rps.max(1e-9),
            rs.p99_ms / cs.p99_ms.max(1e-9),
            rs.server_cpu_us_per_req / cs.server_cpu_us_per_req.max(1e-9),
        );
        line(*proto, *c, "restrictor", rs, Some(ratios));
    }
    println!();
    println!(
        "srv µs/req: server CPU per answered request (schedstat of the server runtime's threads); \
         cli CPU: load client's CPU / wall time (100% = one core); CPU ratio: restrictor/ceiling srv µs/req"
    );
    println!(
        "targets (rows with concurrency 16 and 64): rps ratio >= 0.90 with zero errors; p99 ratio <= 1.20"
    );
    for (proto, c, cs, rs) in results {
        if *c != 16 && *c != 64 {
            continue;
        }
        let rps = rs.rps / cs.rps.max(1e-9);
        let p99 = rs.p99_ms / cs.p99_ms.max(1e-9);
        let ok = |b: bool| if b { "ok" } else { "MISSED" };
        println!(
            "  {} c={c:<3} rps ratio {rps:.3} {}  p99 ratio {p99:.3} {}  errors {} {}",
            proto.label(),
            ok(rps >= 0.90),
            ok(p99 <= 1.20),
            cs.errors + rs.errors,
            ok(cs.errors + rs.errors == 0),
        );
    }
}

/// The built binary in its own process: start time, then peak RSS under 64-concurrency load.
fn process_measurements(
    bin: &Path,
    pki: &Pki,
    review: &Arc<ReviewTemplate>,
    client_rt: &tokio::runtime::Runtime,
    o: &Options,
) {
    println!(
        "separate process: {} serve --tls-cert {} --tls-key {} (default logging, to /dev/null)",
        bin.display(),
        pki.cert.display(),
        pki.key.display()
    );

    // Start → /readyz 200.
    let mut starts = Vec::new();
    for _ in 0..o.starts {
        let t0 = Instant::now();
        let mut p = Process::spawn(bin, pki);
        match p.wait_ready(Duration::from_secs(10)) {
            Some(ready) => starts.push(ready - t0),
            None => eprintln!("  a start did not get ready within 10 s"),
        }
    }
    starts.sort();
    if let (Some(min), Some(max)) = (starts.first(), starts.last()) {
        let median = starts[starts.len() / 2];
        println!(
            "  start -> /readyz 200 over {} starts: min {:.1} ms, median {:.1} ms, max {:.1} ms (target < 100 ms)",
            starts.len(),
            min.as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
        );
    }

    // Peak RSS under load.
    let mut p = Process::spawn(bin, pki);
    if p.wait_ready(Duration::from_secs(10)).is_none() {
        eprintln!("  the server process did not get ready; no RSS figure");
        return;
    }
    let idle = p.status_kib("VmRSS").unwrap_or(0);
    let per_proto = o.duration.max(Duration::from_millis(200));
    for proto in [Proto::H1, Proto::H2] {
        let (mut tally, cpu0) = (Tally::default(), p.cpu());
        let w = client_rt.block_on(async {
            let mut cl = Clients::connect(p.https, pki.client(proto), proto, 64)
                .await
                .expect("connect to the server process");
            cl.run(review, per_proto).await
        });
        tally.add(w, p.cpu().saturating_sub(cpu0), Duration::ZERO);
        let s = tally.stats();
        if let Some(e) = &tally.first_error {
            eprintln!("  first error: {e}");
        }
        println!(
            "  {} c=64 against the process: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms, errors {}, server CPU {:.1} µs/req",
            proto.label(),
            s.rps,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            s.errors,
            s.server_cpu_us_per_req
        );
    }
    let kib = |f: &str| p.status_kib(f).unwrap_or(0);
    let hwm = kib("VmHWM");
    println!(
        "  memory: VmRSS idle {:.1} MiB; after load VmRSS {:.1} MiB, VmHWM (peak) {:.1} MiB (target <= 32 MiB); threads {}",
        idle as f64 / 1024.0,
        kib("VmRSS") as f64 / 1024.0,
        hwm as f64 / 1024.0,
        kib("Threads"),
    );
    let smaps = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", p.pid())).ok();
    if let Some(text) = smaps {
        let get = |k: &str| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(k)?
                        .trim()
                        .strip_suffix("kB")?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .unwrap_or(0)
        };
        println!(
            "  after load: anonymous {:.1} MiB, file-backed {:.1} MiB",
            get("Anonymous:") as f64 / 1024.0,
            (get("Rss:").saturating_sub(get("Anonymous:"))) as f64 / 1024.0,
        );
    }
}
