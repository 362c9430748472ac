//! Progress of the steps that take seconds (a fixture download, a reference run, a plan's
//! pipelines, validate's checkpoints, a browser test), told by the library crates that do
//! them and drawn by whoever installed a [`Reporter`]: the `m2w` command line draws bars
//! with stage names and ETA; with none installed (tests, other embedders) a task costs an
//! atomic load. Like `log`/`tracing`, the reporter is process-wide so that deep library
//! code need not thread a callback through every signature.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a task counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Things: checkpoints, pipelines, files.
    Items,
    /// Bytes (a download).
    Bytes,
}

/// Draws tasks. Calls for one task come in order: `begin`, any `advance`/`message`, `end`.
/// Tasks may nest (a download inside a reference run) and come from several threads.
pub trait Reporter: Send + Sync {
    fn begin(&self, id: u64, stage: &str, total: Option<u64>, unit: Unit);
    /// The task's position (of `total`, when it has one).
    fn advance(&self, id: u64, position: u64);
    /// A note on what the task is doing now (the checkpoint, the file).
    fn message(&self, id: u64, message: &str);
    fn end(&self, id: u64);
}

static REPORTER: OnceLock<Box<dyn Reporter>> = OnceLock::new();
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Installs the process's reporter; the first call wins (false when one was there).
pub fn set_reporter(reporter: Box<dyn Reporter>) -> bool {
    REPORTER.set(reporter).is_ok()
}

/// The installed reporter, if any.
pub fn reporter() -> Option<&'static dyn Reporter> {
    REPORTER.get().map(|r| r.as_ref())
}

/// A step in progress; ends when dropped.
pub struct Task {
    id: u64,
    position: AtomicU64,
}

/// Starts a task named `stage` that counts up to `total` items (None: a spinner).
pub fn task(stage: &str, total: Option<u64>) -> Task {
    start(stage, total, Unit::Items)
}

/// Starts a task that moves `total` bytes (None: size unknown).
pub fn bytes(stage: &str, total: Option<u64>) -> Task {
    start(stage, total, Unit::Bytes)
}

fn start(stage: &str, total: Option<u64>, unit: Unit) -> Task {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    if let Some(r) = reporter() {
        r.begin(id, stage, total, unit);
    }
    Task {
        id,
        position: AtomicU64::new(0),
    }
}

impl Task {
    /// Moves the task on by `n`.
    pub fn inc(&self, n: u64) {
        let p = self.position.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(r) = reporter() {
            r.advance(self.id, p);
        }
    }

    /// Says what the task is doing now.
    pub fn message(&self, message: &str) {
        if let Some(r) = reporter() {
            r.message(self.id, message);
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(r) = reporter() {
            r.end(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

    struct Record;
    impl Reporter for Record {
        fn begin(&self, id: u64, stage: &str, total: Option<u64>, unit: Unit) {
            SEEN.lock()
                .unwrap()
                .push(format!("begin {id} {stage} {total:?} {unit:?}"));
        }
        fn advance(&self, id: u64, position: u64) {
            SEEN.lock()
                .unwrap()
                .push(format!("advance {id} {position}"));
        }
        fn message(&self, id: u64, message: &str) {
            SEEN.lock().unwrap().push(format!("message {id} {message}"));
        }
        fn end(&self, id: u64) {
            SEEN.lock().unwrap().push(format!("end {id}"));
        }
    }

    #[test]
    fn a_task_reports_begin_its_positions_and_end_in_order() {
        assert!(set_reporter(Box::new(Record)));
        assert!(!set_reporter(Box::new(Record)), "the first reporter stays");
        {
            let t = bytes("download x", Some(10));
            t.inc(4);
            t.message("half");
            t.inc(6);
        }
        let seen = SEEN.lock().unwrap().clone();
        let id = seen[0].split(' ').nth(1).unwrap().to_string();
        assert_eq!(
            seen,
            vec![
                format!("begin {id} download x Some(10) Bytes"),
                format!("advance {id} 4"),
                format!("message {id} half"),
                format!("advance {id} 10"),
                format!("end {id}"),
            ]
        );
    }
}
