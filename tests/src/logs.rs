//! A `portwarden run` collecting logs into a JSON-lines file of its own,
//! with listeners on ports no other test uses.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::agent::Agent;
use crate::{eventually, portwarden_bin, unique_name};

/// A log-collecting agent and where its records land.
pub struct LogAgent {
    /// The running agent.
    pub agent: Agent,
    /// The test's own directory: config, state and output.
    pub dir: PathBuf,
    /// The JSON-lines output file.
    pub out: PathBuf,
    /// The syslog port (TCP and UDP).
    pub syslog_port: u16,
    /// The forward port.
    pub forward_port: u16,
}

/// A TCP port nobody listens on now (the UDP one of the same number is
/// checked too, for syslog).
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl LogAgent {
    /// Starts an agent with capture off, a file output, and `extra` TOML
    /// appended to the config (more `[logs]` keys go in `extra_logs`).
    pub async fn start(prefix: &str, extra_logs: &str, extra: &str) -> LogAgent {
        Self::start_with(prefix, extra_logs, "", extra).await
    }

    /// As [`LogAgent::start`], with `extra_forward` keys in `[logs.forward]`.
    pub async fn start_with(prefix: &str, extra_logs: &str, extra_forward: &str, extra: &str) -> LogAgent {
        Self::start_prepared(prefix, extra_logs, extra_forward, extra, |_| {}).await
    }

    /// As [`LogAgent::start_with`], once `prepare` has run on the test
    /// directory (to mount a small file system on its `state`, say).
    pub async fn start_prepared(
        prefix: &str,
        extra_logs: &str,
        extra_forward: &str,
        extra: &str,
        prepare: impl FnOnce(&std::path::Path),
    ) -> LogAgent {
        let dir = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&dir).expect("test dir");
        prepare(&dir);
        let (syslog_port, forward_port) = (free_port(), free_port());
        let out = dir.join("out.json");
        let config = format!(
            "[capture]\nenabled = false\n\n[logs]\nstate_dir = \"{state}\"\n{extra_logs}\n\n\
             [logs.syslog]\nbind = \"127.0.0.1\"\ntcp_port = {syslog_port}\nudp_port = {syslog_port}\n\n\
             [logs.forward]\nbind = \"127.0.0.1\"\nport = {forward_port}\n{extra_forward}\n\n\
             [[logs.outputs]]\ntype = \"file\"\npath = \"{out}\"\n{extra}\n",
            state = dir.join("state").display(),
            out = out.display(),
        );
        std::fs::write(dir.join("portwarden.toml"), config).expect("config");
        let agent = LogAgent { agent: Self::spawn(&dir), dir, out, syslog_port, forward_port };
        agent.agent.wait_for_text("forward listening", Duration::from_secs(30)).await;
        agent
    }

    fn spawn(dir: &std::path::Path) -> Agent {
        let config = dir.join("portwarden.toml");
        let mut command = Command::new(portwarden_bin());
        command.arg("--config").arg(&config).arg("--log-format").arg("json").arg("run");
        Agent::spawn_command(&mut command, Stdio::null())
    }

    /// Kills the agent with SIGKILL (no checkpoint at exit), then starts it again.
    pub async fn crash_and_restart(&mut self) {
        // Dropping an Agent kills it (SIGKILL) and reaps it; only then may
        // the next one start, as with the real conflict guard.
        self.agent.kill();
        self.agent = Self::spawn(&self.dir);
        self.agent.wait_for_text("forward listening", Duration::from_secs(30)).await;
    }

    /// Every record written so far (a line still being written is left out).
    pub fn records(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
        complete
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("output line is not JSON ({e}): {l}")))
            .collect()
    }

    /// Waits until `pred` holds for at least `n` records, and returns them.
    pub async fn wait_records(&self, what: &str, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        eventually(what, Duration::from_secs(60), || {
            let got: Vec<Value> = self.records().into_iter().filter(|r| pred(r)).collect();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

impl Drop for LogAgent {
    fn drop(&mut self) {
        if std::env::var_os("PW_KEEP_TEST_DIRS").is_some() {
            eprintln!("kept {}", self.dir.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The messages of `records`.
pub fn messages(records: &[Value]) -> Vec<String> {
    records.iter().map(|r| r["message"].as_str().unwrap_or_default().to_owned()).collect()
}

/// A private `rsyslogd` receiving RFC 5424 over TCP (`imtcp`) into a file,
/// one line per message: `APP-NAME|PROCID|MSGID|STRUCTURED-DATA|MSG`.
pub struct Rsyslog {
    child: std::process::Child,
    dir: PathBuf,
    /// Where messages land.
    pub out: PathBuf,
    /// The TCP port it listens on.
    pub port: u16,
}

impl Rsyslog {
    /// Starts it on a free port; panics when rsyslogd is missing.
    pub async fn start() -> Rsyslog {
        Self::spawn("", "module(load=\"imtcp\")", Self::to_file).await
    }

    /// As [`Rsyslog::start`], over TLS (RFC 5425, rsyslog's `gtls` driver)
    /// with `certs` from [`crate::tls::certificates`]: the server
    /// certificate for `localhost`, and clients must present a certificate
    /// the same CA signed (`x509/certvalid`).
    pub async fn start_tls(certs: &std::path::Path) -> Rsyslog {
        let file = |f: &str| certs.join(f).display().to_string();
        let global = format!(
            " defaultNetstreamDriverCAFile=\"{}\" defaultNetstreamDriverCertFile=\"{}\" defaultNetstreamDriverKeyFile=\"{}\"",
            file("ca.pem"),
            file("server.pem"),
            file("server.key")
        );
        let module = "module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"x509/certvalid\")";
        Self::spawn(&global, module, Self::to_file).await
    }

    fn to_file(out: &std::path::Path) -> String {
        format!(
            "template(name=\"fields\" type=\"string\" string=\"%app-name%|%procid%|%msgid%|%structured-data%|%msg%\\n\")\n\
             ruleset(name=\"in\") {{ action(type=\"omfile\" file=\"{out}\" template=\"fields\") }}\n",
            out = out.display()
        )
    }

    /// An rsyslogd that relays what it receives to `port` on loopback as
    /// RFC 5424 over TCP with `framing` (`octet-counted` or `traditional`),
    /// as rsyslog's `omfwd` sends: with its template's trailing LF.
    pub async fn relay(port: u16, framing: &str) -> Rsyslog {
        Self::spawn("", "module(load=\"imtcp\")", |_| {
            format!(
                "ruleset(name=\"in\") {{ action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{port}\" protocol=\"tcp\" \
                 TCP_Framing=\"{framing}\" template=\"RSYSLOG_SyslogProtocol23Format\") }}\n"
            )
        })
        .await
    }

    /// Runs rsyslogd with an `imtcp` input (loaded by `module`) on a free
    /// port into ruleset `in`, which `ruleset` (given the output file)
    /// defines; `global` adds parameters to `global()`.
    async fn spawn(global: &str, module: &str, ruleset: impl FnOnce(&std::path::Path) -> String) -> Rsyslog {
        let dir = std::env::temp_dir().join(unique_name("rsyslog"));
        std::fs::create_dir_all(&dir).expect("rsyslog dir");
        let port = free_port();
        let out = dir.join("messages");
        let conf = format!(
            "global(workDirectory=\"{dir}\"{global})\n{module}\n{rules}input(type=\"imtcp\" port=\"{port}\" ruleset=\"in\")\n",
            dir = dir.display(),
            rules = ruleset(&out),
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).expect("rsyslog.conf");
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .spawn()
            .expect("rsyslogd runs (apt-get install rsyslog)");
        eventually("rsyslogd listening", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        })
        .await;
        Rsyslog { child, dir, out, port }
    }

    /// The lines received so far.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out).unwrap_or_default().lines().map(str::to_owned).collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
