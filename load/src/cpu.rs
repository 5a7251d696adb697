//! The servers' CPU over a scenario, in all and by stage: the server names its threads after what
//! they do, so `/proc/PID/task/*/stat` says where the time went without a profiler.

use std::collections::HashMap;

use crate::server::{self, RoostProcess};

/// The server's threads, by the name it gives them (`roost-http` and `roost-mls` in
/// `src/server.rs`, `roost-flusher` in the store, `roost-argon2-N` for hashing; sled names its
/// own `sled-io-N`; the main thread has the program's name), and what each does. The order is
/// the report's.
const STAGES: [(&str, &str); 6] = [
    (
        "roost-http",
        "HTTP workers (parsing, signature checks, handlers)",
    ),
    ("roost", "main thread (queue actors, accounts, relays)"),
    ("roost-mls", "MLS thread (group and key-package actors)"),
    ("roost-flusher", "flusher (flush and fsync)"),
    ("sled-io", "sled's IO pool"),
    ("roost-argon2", "password hashing"),
];

/// The stage of a thread called `name`: its [`STAGES`] name, or that name and `-N`.
fn stage_of(name: &str) -> usize {
    let numbered = |prefix: &str| {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    STAGES
        .iter()
        .position(|(prefix, _)| name == *prefix || numbered(prefix))
        .unwrap_or(STAGES.len())
}

/// CPU seconds per live thread of `pid`: its name and time, by thread id.
fn threads(pid: u32) -> HashMap<u32, (String, f64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return HashMap::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let tid: u32 = task.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let name = stat.split_once('(')?.1.rsplit_once(')')?.0.to_owned();
            Some((tid, (name, server::stat_cpu_seconds(&stat)?)))
        })
        .collect()
}

/// The servers' CPU time over a scenario, per operation (for servers this tool started and
/// whose processes it can read).
pub struct CpuMeter<'a> {
    processes: Vec<&'a RoostProcess>,
    before: Option<f64>,
    threads_before: Vec<HashMap<u32, (String, f64)>>,
}

impl<'a> CpuMeter<'a> {
    pub fn start(processes: impl IntoIterator<Item = &'a RoostProcess>) -> Self {
        let processes: Vec<_> = processes.into_iter().collect();
        let before = Self::total(&processes);
        let threads_before = processes
            .iter()
            .map(|p| p.pid().map(threads).unwrap_or_default())
            .collect();
        CpuMeter {
            processes,
            before,
            threads_before,
        }
    }

    fn total(processes: &[&RoostProcess]) -> Option<f64> {
        if processes.is_empty() {
            return None;
        }
        processes.iter().map(|p| p.cpu_seconds()).sum()
    }

    /// The CPU seconds the servers used since the start, if there is a server process to read.
    pub fn used(&self) -> Option<f64> {
        Some(Self::total(&self.processes)? - self.before?)
    }

    /// "N µs", or "n/a" without a server process to read.
    pub fn per_operation(&self, operations: usize) -> String {
        match self.used() {
            Some(used) => micros(used, operations),
            None => "n/a".into(),
        }
    }

    /// Where [`per_operation`](Self::per_operation) went, by stage: "HTTP workers (…) N µs, …";
    /// time of threads that ended meanwhile (sled starts and ends IO threads) is "other".
    pub fn by_stage(&self, operations: usize) -> String {
        let Some(used) = self.used() else {
            return "n/a".into();
        };
        let mut per_stage = vec![0.0; STAGES.len() + 1];
        for (process, before) in self.processes.iter().zip(&self.threads_before) {
            for (tid, (name, now)) in process.pid().map(threads).unwrap_or_default() {
                let then = before.get(&tid).map_or(0.0, |(_, secs)| *secs);
                per_stage[stage_of(&name)] += (now - then).max(0.0);
            }
        }
        let named: f64 = per_stage[..STAGES.len()].iter().sum();
        per_stage[STAGES.len()] = (used - named).max(0.0);
        let names = STAGES.iter().map(|(_, what)| *what).chain(["other"]);
        names
            .zip(per_stage)
            .filter(|(_, secs)| *secs > 0.0)
            .map(|(what, secs)| format!("{what} {}", micros(secs, operations)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn micros(seconds: f64, operations: usize) -> String {
    format!("{:.0} µs", seconds * 1e6 / operations.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_told_apart_by_the_names_the_server_gives_them() {
        let stage = |name| STAGES.get(stage_of(name)).map(|(prefix, _)| *prefix);
        assert_eq!(stage("roost"), Some("roost"));
        assert_eq!(stage("roost-http"), Some("roost-http"));
        assert_eq!(stage("roost-mls"), Some("roost-mls"));
        assert_eq!(stage("roost-flusher"), Some("roost-flusher"));
        assert_eq!(stage("sled-io-17"), Some("sled-io"));
        assert_eq!(stage("roost-argon2-3"), Some("roost-argon2"));
        assert_eq!(stage("log flusher"), None);
        assert_eq!(stage("roosters"), None);
        assert_eq!(stage("roost-other"), None);
    }
}
