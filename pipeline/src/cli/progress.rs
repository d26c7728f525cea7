//! Progress of long command-line work (replays, compaction) on stderr: a
//! bar redrawn in place when stderr is a terminal, otherwise one line per
//! tenth of the work (logs and CI output stay readable). Nothing goes to
//! stdout, so piped results are unchanged.

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// One piece of long work.
pub struct Progress {
    label: String,
    total: u64,
    tty: bool,
    last_tenth: Option<u64>,
    started: Instant,
}

/// `5/10 [#####.....]  50%` for `done` of `total`, `width` marks wide.
pub fn bar(done: u64, total: u64, width: usize) -> String {
    let done = done.min(total);
    let frac = if total == 0 { 1.0 } else { done as f64 / total as f64 };
    let filled = ((frac * width as f64).round() as usize).min(width);
    format!(
        "{done}/{total} [{}{}] {:>3}%",
        "#".repeat(filled),
        ".".repeat(width - filled),
        (frac * 100.0).floor() as u64
    )
}

impl Progress {
    /// Starts showing `label` for `total` units.
    pub fn new(label: impl Into<String>, total: u64) -> Progress {
        Progress {
            label: label.into(),
            total,
            tty: std::io::stderr().is_terminal(),
            last_tenth: None,
            started: Instant::now(),
        }
    }

    /// `done` units are done (the total may grow, e.g. a replay that finds more).
    pub fn set(&mut self, done: u64, total: u64) {
        self.total = total;
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{} {}  {:.0?}   ", self.label, bar(done, total, 30), self.started.elapsed());
            let _ = err.flush();
            return;
        }
        let tenth = (done.min(total) * 10).checked_div(total).unwrap_or(10);
        if self.last_tenth != Some(tenth) {
            self.last_tenth = Some(tenth);
            let _ = writeln!(err, "{} {}", self.label, bar(done, total, 20));
        }
    }

    /// Ends the bar (a newline on a terminal).
    pub fn finish(&mut self) {
        if self.tty {
            let _ = writeln!(std::io::stderr().lock());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bar;

    #[test]
    fn bars_fill_with_the_work() {
        assert_eq!(bar(0, 10, 10), "0/10 [..........]   0%");
        assert_eq!(bar(5, 10, 10), "5/10 [#####.....]  50%");
        assert_eq!(bar(10, 10, 10), "10/10 [##########] 100%");
        assert_eq!(bar(12, 10, 4), "10/10 [####] 100%");
        assert_eq!(bar(0, 0, 4), "0/0 [####] 100%");
    }
}
