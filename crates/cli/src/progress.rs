//! The command line's [`m2w_progress::Reporter`]: indicatif bars on stderr (stage name,
//! position, elapsed time and ETA) when stderr is a terminal; with `M2W_PROGRESS=plain`,
//! one line when a stage starts and one when it ends (logs, CI); `M2W_PROGRESS=off` or a
//! stderr that is not a terminal draws nothing. Lines the commands print go through [`say`]
//! so that a bar never tears them.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use m2w_progress::Unit;

/// How tasks are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Bars,
    Plain,
}

struct Tasks {
    mode: Mode,
    multi: MultiProgress,
    live: Mutex<HashMap<u64, Live>>,
}

struct Live {
    bar: ProgressBar,
    stage: String,
    started: Instant,
}

static TASKS: OnceLock<&'static Tasks> = OnceLock::new();

/// Installs the reporter the environment asks for (see the module's doc).
pub fn install() {
    let mode = match std::env::var("M2W_PROGRESS").as_deref() {
        Ok("off") | Ok("0") => return,
        Ok("plain") => Mode::Plain,
        _ if std::io::stderr().is_terminal() => Mode::Bars,
        _ => return,
    };
    let multi = MultiProgress::with_draw_target(match mode {
        Mode::Bars => ProgressDrawTarget::stderr_with_hz(8),
        Mode::Plain => ProgressDrawTarget::hidden(),
    });
    let tasks: &'static Tasks = Box::leak(Box::new(Tasks {
        mode,
        multi,
        live: Mutex::new(HashMap::new()),
    }));
    if TASKS.set(tasks).is_ok() {
        m2w_progress::set_reporter(Box::new(Shared(tasks)));
    }
}

/// Prints a line on stdout without tearing a bar.
pub fn say(line: &str) {
    match TASKS.get() {
        Some(t) if t.mode == Mode::Bars => t.multi.suspend(|| println!("{line}")),
        _ => println!("{line}"),
    }
}

/// Takes every bar off the screen (before an error is printed).
pub fn clear() {
    if let Some(t) = TASKS.get() {
        let _ = t.multi.clear();
    }
}

struct Shared(&'static Tasks);

fn style(total: Option<u64>, unit: Unit) -> ProgressStyle {
    let template = match (total, unit) {
        (Some(_), Unit::Bytes) => {
            "{spinner:.green} {prefix:.bold} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {wide_msg}"
        }
        (Some(_), Unit::Items) => {
            "{spinner:.green} {prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} [{elapsed}] ETA {eta} {wide_msg}"
        }
        (None, Unit::Bytes) => "{spinner:.green} {prefix:.bold} {bytes} [{elapsed}] {wide_msg}",
        (None, Unit::Items) => "{spinner:.green} {prefix:.bold} [{elapsed}] {wide_msg}",
    };
    ProgressStyle::with_template(template)
        .expect("the templates are valid")
        .progress_chars("=> ")
}

impl m2w_progress::Reporter for Shared {
    fn begin(&self, id: u64, stage: &str, total: Option<u64>, unit: Unit) {
        let t = self.0;
        let bar = match total {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::new_spinner(),
        };
        bar.set_style(style(total, unit));
        bar.set_prefix(stage.to_string());
        let bar = t.multi.add(bar);
        if t.mode == Mode::Bars {
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
        } else {
            eprintln!("m2w: {stage} ...");
        }
        t.live.lock().unwrap_or_else(|e| e.into_inner()).insert(
            id,
            Live {
                bar,
                stage: stage.to_string(),
                started: Instant::now(),
            },
        );
    }

    fn advance(&self, id: u64, position: u64) {
        if let Some(l) = self
            .0
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            l.bar.set_position(position);
        }
    }

    fn message(&self, id: u64, message: &str) {
        if let Some(l) = self
            .0
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            l.bar.set_message(message.to_string());
        }
    }

    fn end(&self, id: u64) {
        let live = self
            .0
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(l) = live {
            l.bar.finish_and_clear();
            self.0.multi.remove(&l.bar);
            if self.0.mode == Mode::Plain {
                eprintln!(
                    "m2w: {} done in {:.1} s",
                    l.stage,
                    l.started.elapsed().as_secs_f64()
                );
            }
        }
    }
}
