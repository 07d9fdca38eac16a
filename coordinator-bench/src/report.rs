//! A benchmark run's figures, and their table.

use std::fmt;

use super::{BenchOptions, MemorySample, Tally, Workload};

/// One run's figures.
#[derive(Clone, Debug)]
pub struct RunStats {
    pub evaluators: usize,
    pub client_processes: usize,
    pub tasks: usize,
    pub jobs: usize,
    /// From the start of the evaluators to the last one's end.
    pub seconds: f64,
    pub tasks_per_second: f64,
    /// Every `LeaseTask` call, the empty ones included.
    pub lease_calls: usize,
    pub lease_p50_ms: f64,
    pub lease_p99_ms: f64,
    pub lease_max_ms: f64,
    pub complete_p50_ms: f64,
    pub complete_p99_ms: f64,
    pub renewals: usize,
    pub renew_p99_ms: f64,
    pub accepted: usize,
    pub duplicate: usize,
    pub expired: usize,
    pub deaths: usize,
    pub late: usize,
    /// Every job's final P-M accuracy (checked against the independent
    /// computation).
    pub pm_accuracy: f64,
    /// The coordinator process's memory over the run.
    pub memory: Vec<MemorySample>,
    /// Seconds a new coordinator took to rebuild the finished state.
    pub restart_seconds: Option<f64>,
    /// CPU seconds of the coordinator's process and of the client
    /// processes over the run.
    pub server_cpu_seconds: f64,
    pub client_cpu_seconds: f64,
    /// The server's own time per lease (lock, state, reply), from its
    /// histogram: mean and the bucket bound of the 99th percentile.
    pub server_lease_mean_ms: f64,
    pub server_lease_p99_ms: f64,
}

/// The nearest-rank percentile of latencies in microseconds, in
/// milliseconds.
pub fn percentile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    f64::from(sorted_us[rank - 1]) / 1e3
}

impl RunStats {
    pub fn new(
        options: &BenchOptions,
        workload: &Workload,
        mut tally: Tally,
        seconds: f64,
        pm_accuracy: f64,
    ) -> RunStats {
        tally.lease_us.sort_unstable();
        tally.complete_us.sort_unstable();
        tally.renew_us.sort_unstable();
        RunStats {
            evaluators: options.evaluators,
            client_processes: options.client_processes,
            tasks: workload.tasks(),
            jobs: workload.jobs,
            seconds,
            tasks_per_second: tally.accepted.len() as f64 / seconds,
            lease_calls: tally.lease_us.len(),
            lease_p50_ms: percentile_ms(&tally.lease_us, 0.50),
            lease_p99_ms: percentile_ms(&tally.lease_us, 0.99),
            lease_max_ms: percentile_ms(&tally.lease_us, 1.0),
            complete_p50_ms: percentile_ms(&tally.complete_us, 0.50),
            complete_p99_ms: percentile_ms(&tally.complete_us, 0.99),
            renewals: tally.renew_us.len(),
            renew_p99_ms: percentile_ms(&tally.renew_us, 0.99),
            accepted: tally.accepted.len(),
            duplicate: tally.duplicate,
            expired: tally.expired,
            deaths: tally.deaths,
            late: tally.late,
            pm_accuracy,
            memory: vec![],
            restart_seconds: None,
            server_cpu_seconds: f64::NAN,
            client_cpu_seconds: tally.cpu_seconds,
            server_lease_mean_ms: f64::NAN,
            server_lease_p99_ms: f64::NAN,
        }
    }

    /// The table's header line.
    pub fn header() -> String {
        format!(
            "{:>10} {:>7} {:>4} {:>9} {:>8} {:>9} {:>9} {:>9} {:>11} {:>11} {:>8} {:>9}",
            "evaluators",
            "tasks",
            "jobs",
            "tasks/s",
            "lease",
            "lease p50",
            "lease p99",
            "lease max",
            "compl. p50",
            "compl. p99",
            "wall s",
            "restart s"
        )
    }

    /// Where the time of a lease goes: the server's own share, and the
    /// CPU of the server and the clients.
    pub fn time_line(&self) -> String {
        let in_flight = self.evaluators as f64;
        let calls_per_s = (self.lease_calls + self.accepted) as f64 / self.seconds;
        format!(
            "{} evaluators: server time per lease mean {:.3} ms, p99 ≤ {:.3} ms (its histogram); CPU over {:.1} s: coordinator {:.1} s, clients {:.1} s; lease+complete calls {:.0}/s, so {} calls in flight wait ≈ {:.1} ms each (Little's law)",
            self.evaluators,
            self.server_lease_mean_ms,
            self.server_lease_p99_ms,
            self.seconds,
            self.server_cpu_seconds,
            self.client_cpu_seconds,
            calls_per_s,
            self.evaluators,
            in_flight / calls_per_s * 1e3
        )
    }

    /// The memory at the first sample after `warm_up` seconds and at the
    /// last one, with the tasks done in between.
    pub fn memory_growth(&self, warm_up: f64) -> Option<(MemorySample, MemorySample)> {
        let first = self.memory.iter().find(|m| m.seconds >= warm_up)?;
        let last = self.memory.last()?;
        Some((*first, *last))
    }

    /// The memory samples as a table, then their growth after `warm_up`
    /// seconds.
    pub fn memory_table(&self, warm_up: f64) -> String {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let heap = |m: &MemorySample| m.heap.map_or("-".to_string(), |h| format!("{:.1}", mib(h)));
        let mut text = format!(
            "{:>8} {:>10} {:>10} {:>10}\n",
            "t s", "RSS MiB", "heap MiB", "tasks done"
        );
        for m in &self.memory {
            text += &format!(
                "{:>8.0} {:>10.1} {:>10} {:>10}\n",
                m.seconds,
                mib(m.rss),
                heap(m),
                m.done
            );
        }
        let Some((first, last)) = self.memory_growth(warm_up) else {
            return text + &format!("no sample after the warm-up of {warm_up:.0} s");
        };
        let growth = |a: f64, b: f64| format!("{a:.1} -> {b:.1} MiB ({:+.1} MiB)", b - a);
        text += &format!(
            "after the warm-up ({warm_up:.0} s): RSS {}",
            growth(mib(first.rss), mib(last.rss))
        );
        if let (Some(a), Some(b)) = (first.heap, last.heap) {
            text += &format!(", heap {}", growth(mib(a), mib(b)));
        }
        text + &format!(" over {} tasks done", last.done - first.done)
    }
}

impl fmt::Display for RunStats {
    /// One line of the table (latencies in ms).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let restart = self
            .restart_seconds
            .map_or("-".to_string(), |s| format!("{s:.2}"));
        write!(
            f,
            "{:>10} {:>7} {:>4} {:>9.1} {:>8} {:>9.3} {:>9.3} {:>9.3} {:>11.3} {:>11.3} {:>8.2} {:>9}",
            self.evaluators,
            self.tasks,
            self.jobs,
            self.tasks_per_second,
            self.lease_calls,
            self.lease_p50_ms,
            self.lease_p99_ms,
            self.lease_max_ms,
            self.complete_p50_ms,
            self.complete_p99_ms,
            self.seconds,
            restart
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let d: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile_ms(&d, 0.5), 50.0);
        assert_eq!(percentile_ms(&d, 0.99), 99.0);
        assert_eq!(percentile_ms(&d, 1.0), 100.0);
        assert_eq!(percentile_ms(&d[..1], 0.99), 1.0);
        assert!(percentile_ms(&[], 0.5).is_nan());
    }
}
