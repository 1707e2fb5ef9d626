//! The soak benchmark (issue 18): N short-lived containers, Docker
//! containers and CRI pods on containerd mixed, started and removed while
//! `portwarden run` watches them with capture, log collection and detection
//! on. Each container logs a few numbered lines and opens one TCP connection
//! to its network's gateway (the host's side of an internal bridge: nothing
//! leaves the machine).
//!
//! It samples the agent's RSS, fds, threads and CPU once a second, then
//! checks that every line arrived exactly once, attributed to its container,
//! and that every container's network namespace was captured. Some
//! containers are made to go wrong, as on a real node: they die during
//! attach (exit at once), vanish between list and inspect (removed right
//! after `docker run`), or have their log file deleted while it is read (a
//! pod removed while its container still logs). Their lines are not
//! expected; they must leak nothing.
//!
//! ```text
//! cargo build --release -p portwarden -p portwarden-tests --example soak
//! target/release/examples/soak --containers 2000            # bench/run.sh
//! target/debug/examples/soak --containers 100 --check        # scripts/test.sh
//! ```
//!
//! `--check` exits non-zero unless every expected line arrived once and
//! attributed, every container was captured, and fds and threads came back
//! to their baseline. It never asserts times or memory: this machine is
//! shared and noisy; those are printed for the reader.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portwarden_tests::agent::Agent;
use portwarden_tests::cri::CriPod;
use portwarden_tests::logs::free_port;
use portwarden_tests::{busybox_image, portwarden_bin, test_network, unique_name};

/// Lines each well-behaved container logs (stdout and stderr alternate).
const LINES: usize = 3;
/// The CRI bridge's gateway (scripts/testbed-up.sh).
const CNI_GATEWAY: &str = "10.88.0.1";

struct Options {
    containers: usize,
    cri_every: usize,
    parallel: usize,
    settle: Duration,
    check: bool,
}

impl Options {
    fn parse() -> Options {
        let mut o = Options {
            containers: 2000,
            cri_every: 10,
            parallel: 4,
            // Past the tag grace (5 min) and its sweep.
            settle: Duration::from_secs(330),
            check: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = |name: &str| -> u64 {
                args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} takes a number"))
            };
            match a.as_str() {
                "--containers" => o.containers = value("--containers") as usize,
                "--cri-every" => o.cri_every = value("--cri-every").max(1) as usize,
                "--parallel" => o.parallel = value("--parallel").max(1) as usize,
                "--settle" => o.settle = Duration::from_secs(value("--settle")),
                "--check" => o.check = true,
                other => panic!(
                    "unknown argument {other}; usage: soak [--containers N] [--cri-every K] [--parallel P] \
                     [--settle SECONDS] [--check]"
                ),
            }
        }
        o
    }
}

/// How one container is made to behave.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Logs, connects, lives two seconds, exits, and is removed.
    Normal,
    /// Exits at once: it dies while the agent attaches.
    DiesAtOnce,
    /// Removed straight after `docker run`: gone between list and inspect.
    RemovedAtOnce,
    /// A pod removed while its container still logs: the log file is
    /// deleted while it is read.
    LogDeleted,
}

/// What the driver made, for the checks.
struct Made {
    id: String,
    /// The pod sandbox's id (CRI), whose capture the container shares.
    sandbox: Option<String>,
    /// The pod's name (CRI), or the container's (Docker).
    name: String,
    kind: Kind,
    tag: String,
}

/// One sample of the agent process.
#[derive(Clone, Copy, Default, Debug)]
struct Sample {
    at: f64,
    rss_kib: u64,
    /// Anonymous memory (the heap, stacks, rings), without the binary's
    /// pages a code path first taken during churn brought in.
    anon_kib: u64,
    fds: usize,
    threads: usize,
    cpu_s: f64,
}

fn sample(pid: u32, t0: Instant) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let (rss_kib, anon_kib) = (kib("VmRSS:"), kib("RssAnon:"));
    let count = |dir: String| std::fs::read_dir(dir).map_or(0, Iterator::count);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    // utime and stime, fields 14 and 15 of stat (11 and 12 after the name).
    let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Sample {
        at: t0.elapsed().as_secs_f64(),
        rss_kib,
        anon_kib,
        fds: count(format!("/proc/{pid}/fd")),
        threads: count(format!("/proc/{pid}/task")),
        cpu_s: ticks as f64 / hz,
    }
}

/// The agent's threads by name, to tell which one stayed.
fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|n| n.trim().to_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn print_sample(what: &str, s: Sample) {
    println!(
        "{what:>22}: t={:7.1}s  RSS {:7.1} MiB (anon {:5.1})  fds {:4}  threads {:3}  CPU {:7.2} s",
        s.at,
        s.rss_kib as f64 / 1024.0,
        s.anon_kib as f64 / 1024.0,
        s.fds,
        s.threads,
        s.cpu_s
    );
}

/// The agent under test, with capture, logs and detection on, writing
/// records to a JSON-lines file in `dir`.
fn start_agent(dir: &Path) -> (Agent, PathBuf, u16) {
    let out = dir.join("out.json");
    let (syslog, forward, metrics) = (free_port(), free_port(), free_port());
    let config = format!(
        "[capture]\nenabled = true\n\n\
         [logs]\nstate_dir = \"{state}\"\n\n\
         [logs.syslog]\nbind = \"127.0.0.1\"\ntcp_port = {syslog}\nudp_port = {syslog}\n\n\
         [logs.forward]\nbind = \"127.0.0.1\"\nport = {forward}\n\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\n\
         [nids]\nenabled = true\nrun_dir = \"{run}\"\n\n\
         [[logs.outputs]]\ntype = \"file\"\npath = \"{out}\"\n",
        state = dir.join("state").display(),
        run = dir.join("run").display(),
        out = out.display(),
    );
    let path = dir.join("portwarden.toml");
    std::fs::write(&path, config).expect("config");
    let mut command = Command::new(portwarden_bin());
    command.arg("--config").arg(&path).args(["--log-format", "json", "run"]);
    (Agent::spawn_command(&mut command, Stdio::null()), out, metrics)
}

/// The shell a well-behaved container runs.
fn script(tag: &str, gateway: &str, linger: &str) -> String {
    let mut s = String::new();
    for i in 1..=LINES {
        let to = if i % 2 == 0 { " >&2" } else { "" };
        s.push_str(&format!("echo {tag}-{i}{to}; "));
    }
    s + &format!("nc -w 1 {gateway} 9 </dev/null >/dev/null 2>&1; sleep {linger}")
}

async fn docker(args: Vec<String>) -> Result<String, String> {
    let out = tokio::process::Command::new("docker").args(&args).output().await.map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

async fn run_docker(n: usize, kind: Kind, run: &str, gateway: &str) -> Made {
    let tag = format!("{run}-{n}");
    let name = format!("{run}-d{n}");
    let command = match kind {
        Kind::DiesAtOnce => "true".to_owned(),
        _ => script(&tag, gateway, "2"),
    };
    let args = ["run", "-d", "--pull", "never", "--name", &name, "--network", &test_network(), &busybox_image()];
    let mut args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    args.extend(["sh".into(), "-c".into(), command]);
    let id = docker(args).await.unwrap_or_else(|e| panic!("{e}"));
    if kind != Kind::RemovedAtOnce {
        let _ = docker(vec!["wait".into(), id.clone()]).await;
    }
    docker(vec!["rm".into(), "-f".into(), id.clone()]).await.unwrap_or_else(|e| panic!("{e}"));
    Made { id, sandbox: None, name, kind, tag }
}

async fn run_cri(n: usize, kind: Kind, run: &str) -> Made {
    let tag = format!("{run}-{n}");
    let mut pod = CriPod::run(&format!("{run}-p{n}")).await;
    let (name, sandbox) = (pod.name.clone(), Some(pod.sandbox_id.clone()));
    let command = match kind {
        // Logs on after the pod is gone: its log file is deleted under the reader.
        Kind::LogDeleted => {
            format!("{}; while true; do echo {tag}-more; sleep 0.05; done", script(&tag, CNI_GATEWAY, "0"))
        }
        _ => script(&tag, CNI_GATEWAY, "2"),
    };
    let id = pod.start_with("c", &["sh", "-c", &command]).await;
    // The pod's life, not a wait for the agent: a well-behaved one logs,
    // connects and lingers; the other is removed while it still logs.
    tokio::time::sleep(Duration::from_secs(if kind == Kind::LogDeleted { 1 } else { 3 })).await;
    pod.remove().await;
    Made { id, sandbox, name, kind, tag }
}

fn kind_of(n: usize, cri: Option<usize>) -> Kind {
    match (cri, n % 40) {
        // Every fourth pod.
        (Some(pod), _) if pod % 4 == 3 => Kind::LogDeleted,
        (Some(_), _) => Kind::Normal,
        (None, 7) => Kind::DiesAtOnce,
        (None, 23) => Kind::RemovedAtOnce,
        _ => Kind::Normal,
    }
}

async fn churn(range: std::ops::Range<usize>, o: &Options, run: &str, gateway: &str) -> Vec<Made> {
    let gate = Arc::new(tokio::sync::Semaphore::new(o.parallel));
    let mut tasks = tokio::task::JoinSet::new();
    for n in range {
        let permit = Arc::clone(&gate).acquire_owned().await.expect("semaphore");
        let cri = n % o.cri_every == o.cri_every - 1;
        let kind = kind_of(n, cri.then_some(n / o.cri_every));
        let (run, gateway) = (run.to_owned(), gateway.to_owned());
        tasks.spawn(async move {
            let made = if cri { run_cri(n, kind, &run).await } else { run_docker(n, kind, &run, &gateway).await };
            drop(permit);
            made
        });
    }
    let mut made = Vec::new();
    while let Some(m) = tasks.join_next().await {
        made.push(m.expect("a churn task"));
    }
    made
}

/// Each of this run's lines in the output: tag-line → (container ids).
fn lines_seen(out: &Path, run: &str) -> HashMap<String, Vec<String>> {
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    let Ok(file) = std::fs::File::open(out) else { return seen };
    for line in BufReader::new(file).lines().map_while(Result::ok) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        let Some(message) = v["message"].as_str() else { continue };
        let message = message.trim_end();
        if message.starts_with(run) {
            let id = v["container"]["id"].as_str().unwrap_or("").to_owned();
            seen.entry(message.to_owned()).or_default().push(id);
        }
    }
    seen
}

/// The agent's metric lines whose names start with one of `names`.
fn metric(port: u16, names: &[&str]) -> Vec<String> {
    use std::io::{Read, Write};
    let mut text = String::new();
    if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        let _ = s.read_to_string(&mut text);
    }
    text.lines().filter(|l| !l.starts_with('#') && names.iter().any(|n| l.starts_with(n))).map(str::to_owned).collect()
}

fn main() {
    let o = Options::parse();
    let dir = std::env::temp_dir().join(unique_name("soak"));
    std::fs::create_dir_all(&dir).expect("soak dir");
    let run = unique_name("soak");
    let gateway = portwarden_tests::api::gateway();
    println!(
        "== soak: {} containers (every {}th a CRI pod), {} at a time, agent {}",
        o.containers,
        o.cri_every,
        o.parallel,
        portwarden_bin().display()
    );
    let t0 = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (agent, out, metrics_port) = start_agent(&dir);
    rt.block_on(async {
        agent.wait_for_text("Suricata engine started", Duration::from_secs(300)).await;
        agent.wait_for_text("forward listening", Duration::from_secs(60)).await;
        agent.wait_for_text("runtime synced", Duration::from_secs(60)).await;
    });
    let pid = agent.pid();
    let idle = sample(pid, t0);
    print_sample("idle", idle);

    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let (samples, stop) = (Arc::clone(&samples), Arc::clone(&stop));
        move || {
            while !stop.load(Ordering::Relaxed) {
                samples.lock().expect("samples").push(sample(pid, t0));
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    });

    // A warm-up round of every kind of container fills what lives as long
    // as the agent (the runtime's threads, the allocator's arenas, the
    // binary's pages of each code path) before the baseline.
    let warm = (4 * o.cri_every).max(2 * o.parallel).min(o.containers / 2);
    let mut made = rt.block_on(churn(0..warm, &o, &run, &gateway));
    // The baseline is a settled figure, as the last sample is: jemalloc
    // returns freed pages after its ten-second decay.
    std::thread::sleep(Duration::from_secs(10));
    let baseline = sample(pid, t0);
    let baseline_threads = thread_names(pid);
    print_sample("baseline (warmed up)", baseline);

    let started = sample(pid, t0);
    let churn_t = Instant::now();
    made.extend(rt.block_on(churn(warm..o.containers, &o, &run, &gateway)));
    let churned = sample(pid, t0);
    let churn_s = churn_t.elapsed().as_secs_f64();
    print_sample("churn done", churned);

    // Settle: bounded grace periods run out, fds and threads come back.
    let settle_until = Instant::now() + o.settle;
    while Instant::now() < settle_until {
        std::thread::sleep(Duration::from_secs(1));
    }
    let mut settled = sample(pid, t0);
    let back_by = Instant::now() + Duration::from_secs(60);
    while (settled.fds > baseline.fds || settled.threads > baseline.threads) && Instant::now() < back_by {
        std::thread::sleep(Duration::from_secs(1));
        settled = sample(pid, t0);
    }
    print_sample("settled", settled);
    let settled_threads = thread_names(pid);
    let threads_stayed = settled_threads.len() > baseline_threads.len();
    if threads_stayed {
        println!("threads at baseline: {baseline_threads:?}\nthreads settled:     {settled_threads:?}");
        // Where the extra threads are, for the reader (gdb only reads).
        let stacks = Command::new("gdb")
            .args(["-p", &pid.to_string(), "-batch", "-ex", "thread apply all bt 12"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let _ = std::fs::write(dir.join("threads.txt"), stacks);
        println!("their stacks: {}", dir.join("threads.txt").display());
    }
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let peak = samples.lock().expect("samples").iter().map(|s| s.rss_kib).max().unwrap_or(0);

    // Lines: each expected one once, with its container's id.
    let seen = lines_seen(&out, &run);
    let mut failures = Vec::new();
    let (mut expected, mut arrived, mut attributed, mut twice) = (0, 0, 0, 0);
    for m in made.iter().filter(|m| m.kind == Kind::Normal) {
        for i in 1..=LINES {
            expected += 1;
            let ids = seen.get(&format!("{}-{i}", m.tag)).cloned().unwrap_or_default();
            arrived += usize::from(!ids.is_empty());
            attributed += usize::from(!ids.is_empty() && ids.iter().all(|id| *id == m.id));
            if ids.len() > 1 {
                twice += 1;
            }
            if ids.is_empty() && failures.len() < 10 {
                failures.push(format!("line {}-{i} of {} ({}) never arrived", m.tag, m.name, m.id));
            }
        }
    }
    // Captures: every well-behaved container's namespace was attached.
    let attached: Vec<serde_json::Value> = agent
        .lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "capture attached")
        .collect();
    let captured = |m: &Made| {
        attached.iter().any(|v| {
            let container = v["container"].as_str();
            container == Some(m.id.as_str()) || (m.sandbox.is_some() && container == m.sandbox.as_deref())
        })
    };
    let normal: Vec<&Made> = made.iter().filter(|m| m.kind == Kind::Normal).collect();
    let not_captured: Vec<&&Made> = normal.iter().filter(|m| !captured(m)).collect();
    for m in not_captured.iter().take(10) {
        failures.push(format!("{} ({}) was never captured", m.name, m.id));
    }
    // Resume points kept for containers: the live ones only, once settled.
    let checkpoint = std::fs::read(dir.join("state/log-checkpoints.json")).unwrap_or_default();
    let positions = serde_json::from_slice::<serde_json::Value>(&checkpoint)
        .ok()
        .and_then(|v| v["positions"].as_object().map(serde_json::Map::len))
        .unwrap_or(0);
    let errors = agent.lines().iter().filter(|l| l.contains("\"level\":\"ERROR\"")).count();
    let cpu_pct = 100.0 * (churned.cpu_s - started.cpu_s) / churn_s;
    let count = |k: Kind| made.iter().filter(|m| m.kind == k).count();

    println!("\n== soak results ({} containers in {:.0} s of churn)", made.len(), churn_s);
    println!(
        "containers: {} well-behaved, {} died at once, {} removed at once, {} with their log deleted while read",
        count(Kind::Normal),
        count(Kind::DiesAtOnce),
        count(Kind::RemovedAtOnce),
        count(Kind::LogDeleted)
    );
    println!(
        "lines: {arrived}/{expected} arrived, {attributed}/{expected} attributed to their container, {twice} twice"
    );
    println!("captured: {}/{} well-behaved containers", normal.len() - not_captured.len(), normal.len());
    println!(
        "RSS: idle {:.1} MiB, baseline {:.1} MiB, peak {:.1} MiB, settled {:.1} MiB ({:+.2} MiB over baseline; \
         anonymous {:+.2} MiB)",
        idle.rss_kib as f64 / 1024.0,
        baseline.rss_kib as f64 / 1024.0,
        peak as f64 / 1024.0,
        settled.rss_kib as f64 / 1024.0,
        (settled.rss_kib as f64 - baseline.rss_kib as f64) / 1024.0,
        (settled.anon_kib as f64 - baseline.anon_kib as f64) / 1024.0
    );
    println!(
        "fds: baseline {} settled {}; threads: baseline {} settled {}",
        baseline.fds, settled.fds, baseline.threads, settled.threads
    );
    println!("CPU during churn: {cpu_pct:.1} % of a core; agent errors logged: {errors}");
    println!("resume points saved after settling: {positions} (every container is gone)");
    for m in metric(
        metrics_port,
        &[
            "portwarden_containers",
            "portwarden_captures ",
            "portwarden_capture_vanished",
            "portwarden_capture_attach",
            "portwarden_inventory_",
            "portwarden_logs_files_deleted",
            "portwarden_logs_records",
            "portwarden_nids_tagged",
            "portwarden_log_output_records",
        ],
    )
    .iter()
    .filter(|l| !l.contains("_bucket"))
    {
        println!("  {m}");
    }

    if o.check {
        if arrived != expected || attributed != expected || twice != 0 {
            failures.push(format!("lines: {arrived}/{expected} arrived, {attributed} attributed, {twice} twice"));
        }
        if positions != 0 {
            failures.push(format!("{positions} resume points of removed containers are still saved"));
        }
        if settled.fds > baseline.fds || settled.threads > baseline.threads {
            failures.push(format!(
                "fds/threads did not come back: baseline {}/{}, settled {}/{}",
                baseline.fds, baseline.threads, settled.fds, settled.threads
            ));
        }
        if !failures.is_empty() {
            for f in &failures {
                eprintln!("soak: {f}");
            }
            let log = dir.join("agent.log");
            let _ = std::fs::write(&log, agent.lines().join("\n"));
            eprintln!("soak: the agent's log and output are kept in {}", dir.display());
            std::process::exit(1);
        }
        println!("soak: every check passed");
    }
    drop(agent);
    if !threads_stayed {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
