//! The machine a report was measured on: CPU, cores, memory, OS, PostgreSQL,
//! eslab's commit. Read from `/proc` and `/etc/os-release` (Linux); what
//! cannot be read is reported as `unknown`.

use std::fmt::Write as _;

/// Facts about this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Logical cores available to this process.
    pub cores: usize,
    /// Total memory.
    pub memory: String,
    /// Operating system and kernel.
    pub os: String,
    /// PostgreSQL's `version()`, if reachable.
    pub postgres: String,
    /// eslab's version and git commit.
    pub eslab: String,
    /// When the report was written (UTC).
    pub date: String,
}

const UNKNOWN: &str = "unknown";

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn cpu_model() -> Option<String> {
    let info = read("/proc/cpuinfo")?;
    info.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_owned())
}

fn memory() -> Option<String> {
    let info = read("/proc/meminfo")?;
    let kib: u64 = info.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse().ok()?;
    #[allow(clippy::cast_precision_loss)] // memory sizes far below 2^52
    let gib = kib as f64 / 1024.0 / 1024.0;
    Some(format!("{gib:.1} GiB"))
}

fn os() -> String {
    let name = read("/etc/os-release")
        .and_then(|r| r.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_owned())));
    let kernel = read("/proc/sys/kernel/osrelease").map(|k| k.trim().to_owned());
    match (name, kernel) {
        (Some(n), Some(k)) => format!("{n}, Linux {k}"),
        (Some(n), None) => n,
        (None, Some(k)) => format!("Linux {k}"),
        (None, None) => std::env::consts::OS.to_owned(),
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn eslab_version() -> String {
    let version = env!("CARGO_PKG_VERSION");
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            format!("{version}, commit {commit}{}", if dirty { " (with uncommitted changes)" } else { "" })
        }
        None => format!("{version} (commit unknown: not run from a git checkout)"),
    }
}

impl Machine {
    /// Detects this machine; `postgres` is the server's `version()` if reachable.
    pub async fn detect(postgres: Option<&str>) -> Machine {
        let date = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| UNKNOWN.to_owned());
        Machine {
            cpu: cpu_model().unwrap_or_else(|| UNKNOWN.to_owned()),
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            memory: memory().unwrap_or_else(|| UNKNOWN.to_owned()),
            os: os(),
            postgres: postgres.map_or_else(|| "not reachable".to_owned(), str::to_owned),
            eslab: tokio::task::spawn_blocking(eslab_version).await.unwrap_or_else(|_| UNKNOWN.to_owned()),
            date,
        }
    }

    /// A Markdown table of the facts.
    pub fn to_markdown(&self) -> String {
        let mut md = String::from("| | |\n|---|---|\n");
        let cores = self.cores.to_string();
        for (k, v) in [
            ("CPU", self.cpu.as_str()),
            ("cores", cores.as_str()),
            ("memory", self.memory.as_str()),
            ("OS", self.os.as_str()),
            ("PostgreSQL", self.postgres.as_str()),
            ("eslab", self.eslab.as_str()),
            ("date", self.date.as_str()),
        ] {
            let _ = writeln!(md, "| {k} | {} |", v.replace('|', "\\|"));
        }
        md
    }
}
