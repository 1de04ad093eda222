//! The machine a report was measured on: CPU, cores, memory, OS, PostgreSQL,
//! eslab's commit. The machine's facts come from `sysinfo`; what cannot be
//! read is reported as `unknown`.

use std::fmt::Write as _;

use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

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

/// The CPU's model name and the total memory, read through `sysinfo`.
fn cpu_and_memory() -> (Option<String>, Option<String>) {
    let refresh =
        RefreshKind::nothing().with_cpu(CpuRefreshKind::nothing()).with_memory(MemoryRefreshKind::nothing().with_ram());
    let Ok(system) = System::new_with_specifics(refresh) else {
        return (None, None);
    };
    let cpu = system.cpus().first().map(|c| c.brand().trim().to_owned()).filter(|b| !b.is_empty());
    #[allow(clippy::cast_precision_loss)] // memory sizes far below 2^52
    let memory =
        Some(system.total_memory()).filter(|&b| b > 0).map(|b| format!("{:.1} GiB", b as f64 / 1024f64.powi(3)));
    (cpu, memory)
}

/// The OS (distribution and version) and its kernel, e.g. "Linux (Debian
/// GNU/Linux 12), kernel 6.1.0".
fn os() -> String {
    match (System::long_os_version().ok(), System::kernel_version().ok()) {
        (Some(n), Some(k)) => format!("{n}, kernel {k}"),
        (Some(n), None) => n,
        (None, Some(k)) => format!("{}, kernel {k}", std::env::consts::OS),
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
        let (cpu, memory) = cpu_and_memory();
        Machine {
            cpu: cpu.unwrap_or_else(|| UNKNOWN.to_owned()),
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            memory: memory.unwrap_or_else(|| UNKNOWN.to_owned()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn detects_this_machine() {
        let machine = Machine::detect(None).await;
        if cfg!(target_os = "linux") {
            assert_ne!(machine.cpu, UNKNOWN, "{machine:?}");
            assert!(machine.memory.ends_with(" GiB") && machine.memory != "0.0 GiB", "{machine:?}");
            assert!(machine.os.starts_with("Linux") && machine.os.contains(", kernel "), "{machine:?}");
        }
        assert!(machine.cores >= 1);
        assert_eq!(machine.postgres, "not reachable");
        let md = machine.to_markdown();
        assert!(md.contains(&format!("| CPU | {} |", machine.cpu.replace('|', "\\|"))), "{md}");
    }
}
