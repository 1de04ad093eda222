//! CPU time spent while a measurement runs: this process's (the client:
//! eslab, sqlx, tokio and the lab's own bookkeeping), PostgreSQL's (its
//! processes on this machine; nothing when the server is elsewhere) and how
//! busy the whole machine was, read through `sysinfo`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sysinfo::{CpuRefreshKind, Pid, ProcessRefreshKind, ProcessesToUpdate, RefreshKind, System};

/// This process's CPU time so far (user and system, all threads); `None`
/// where the platform does not tell.
#[cfg_attr(not(any(feature = "peers", test)), allow(dead_code))] // read by the peers experiment and the tests
pub(crate) fn process_cpu() -> Option<Duration> {
    let pid = sysinfo::get_current_pid().ok()?;
    let mut system = System::new_with_specifics(RefreshKind::nothing()).ok()?;
    own_cpu(&mut system, pid)
}

fn own_cpu(system: &mut System, pid: Pid) -> Option<Duration> {
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        false,
        ProcessRefreshKind::nothing().with_cpu(),
    );
    system.process(pid).map(|p| Duration::from_millis(p.accumulated_cpu_time()))
}

/// The CPU time of each process named `postgres` (PostgreSQL's backends
/// and helpers), by pid.
fn postgres_cpu(system: &mut System) -> HashMap<Pid, Duration> {
    system.refresh_processes_specifics(ProcessesToUpdate::All, true, ProcessRefreshKind::nothing().with_cpu());
    system
        .processes()
        .iter()
        .filter(|(_, p)| p.name() == "postgres")
        .map(|(pid, p)| (*pid, Duration::from_millis(p.accumulated_cpu_time())))
        .collect()
}

/// The CPU the `postgres` processes alive at `after` spent since `before`
/// (a process started in between counts from zero). A process that exited
/// in between is left out: what it spent in the window is gone with it, and
/// subtracting what it had spent before would charge the window for a
/// connection that merely closed (as a previous variant's pool does).
fn postgres_spent(before: &HashMap<Pid, Duration>, after: &HashMap<Pid, Duration>) -> Duration {
    after.iter().map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or_default())).sum()
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct CpuUse {
    /// This process's CPU time.
    pub(crate) client: Duration,
    /// PostgreSQL's processes' CPU time.
    pub(crate) postgres: Duration,
    /// Wall time times the machine's average busy share of all its cores.
    pub(crate) busy: Duration,
    /// Wall time times the number of cores.
    pub(crate) capacity: Duration,
}

impl CpuUse {
    /// Adds a later measurement.
    pub(crate) fn add(&mut self, other: CpuUse) {
        self.client += other.client;
        self.postgres += other.postgres;
        self.busy += other.busy;
        self.capacity += other.capacity;
    }

    /// Client CPU per operation, in microseconds (NaN for no operations).
    pub(crate) fn client_us(&self, ops: u64) -> f64 {
        per_op_us(self.client, ops)
    }

    /// PostgreSQL CPU per operation, in microseconds (NaN for no operations).
    pub(crate) fn postgres_us(&self, ops: u64) -> f64 {
        per_op_us(self.postgres, ops)
    }

    /// The machine's busy share of all its cores, in percent.
    pub(crate) fn busy_percent(&self) -> f64 {
        if self.capacity.is_zero() { f64::NAN } else { 100.0 * self.busy.as_secs_f64() / self.capacity.as_secs_f64() }
    }
}

fn per_op_us(cpu: Duration, ops: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    if ops == 0 { f64::NAN } else { cpu.as_secs_f64() * 1e6 / ops as f64 }
}

/// Measures [`CpuUse`] from [`CpuMeter::start`] to [`CpuMeter::finish`].
pub(crate) struct CpuMeter {
    system: System,
    pid: Option<Pid>,
    client: Option<Duration>,
    postgres: HashMap<Pid, Duration>,
    started: Instant,
}

impl CpuMeter {
    /// Starts measuring (`None` where the platform does not tell CPU times).
    pub(crate) fn start() -> Option<CpuMeter> {
        let mut system =
            System::new_with_specifics(RefreshKind::nothing().with_cpu(CpuRefreshKind::nothing().with_usage())).ok()?;
        let postgres = postgres_cpu(&mut system);
        system.refresh_cpu_usage();
        let pid = sysinfo::get_current_pid().ok();
        // Last, so that reading the other processes counts before the window.
        let client = pid.and_then(|pid| own_cpu(&mut system, pid));
        Some(CpuMeter { system, pid, client, postgres, started: Instant::now() })
    }

    /// What was spent since [`CpuMeter::start`].
    pub(crate) fn finish(mut self) -> CpuUse {
        // First, so that reading the other processes counts after the window.
        let client = self.pid.and_then(|pid| own_cpu(&mut self.system, pid));
        let wall = self.started.elapsed();
        self.system.refresh_cpu_usage();
        let busy_share = f64::from(self.system.global_cpu_usage()) / 100.0;
        let cores = u32::try_from(self.system.cpus().len()).unwrap_or(u32::MAX).max(1);
        let postgres = postgres_spent(&self.postgres, &postgres_cpu(&mut self.system));
        CpuUse {
            client: client.zip(self.client).map_or(Duration::ZERO, |(after, before)| after.saturating_sub(before)),
            postgres,
            busy: (wall * cores).mul_f64(busy_share.clamp(0.0, 1.0)),
            capacity: wall * cores,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_loop_shows_as_client_cpu_and_machine_load() {
        let meter = CpuMeter::start().unwrap();
        // Until this process has spent 100 ms of CPU, however busy the machine is.
        let spent = process_cpu().unwrap() + Duration::from_millis(100);
        let mut x = 0_u64;
        while process_cpu().unwrap() < spent {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        let used = meter.finish();
        assert!(used.client >= Duration::from_millis(100), "{used:?}");
        assert!(used.busy_percent() > 0.0 && used.busy_percent() <= 100.0, "{used:?}");
        assert!((used.client_us(1_000) - used.client.as_secs_f64() * 1e3).abs() < 1e-6);
        assert!(used.postgres_us(0).is_nan());
    }

    #[test]
    fn a_closed_connection_does_not_take_cpu_off_the_window() {
        let before = HashMap::from([(Pid::from(1), Duration::from_secs(5)), (Pid::from(2), Duration::from_millis(10))]);
        // 1 exited (a closed connection), 2 spent 30 ms, 3 started and spent 7 ms.
        let after =
            HashMap::from([(Pid::from(2), Duration::from_millis(40)), (Pid::from(3), Duration::from_millis(7))]);
        assert_eq!(postgres_spent(&before, &after), Duration::from_millis(37));
    }

    #[test]
    fn uses_add_up() {
        let one = CpuUse {
            client: Duration::from_millis(10),
            postgres: Duration::from_millis(20),
            busy: Duration::from_millis(30),
            capacity: Duration::from_millis(60),
        };
        let mut total = one;
        total.add(one);
        assert_eq!(total.postgres, Duration::from_millis(40));
        assert!((total.busy_percent() - 50.0).abs() < 1e-9);
    }
}
