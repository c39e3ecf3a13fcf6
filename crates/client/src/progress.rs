//! Progress of transfers: a bar per blob on a terminal (indicatif), a line per blob when the
//! output is not a terminal, nothing with `--quiet`. All of it goes to standard error, so
//! standard output carries only results.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

#[derive(Clone)]
pub struct Progress {
    mode: Mode,
}

#[derive(Clone)]
enum Mode {
    Bars(MultiProgress),
    Lines,
    Quiet,
}

/// One blob's transfer; clones show the same bar.
#[derive(Clone)]
pub struct Task {
    bar: Option<ProgressBar>,
    label: String,
    lines: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        } else {
            Mode::Lines
        };
        Progress { mode }
    }

    /// A line of status, above the bars on a terminal.
    pub fn note(&self, msg: &str) {
        match &self.mode {
            Mode::Bars(m) => {
                let _ = m.println(msg);
            }
            Mode::Lines => eprintln!("{msg}"),
            Mode::Quiet => {}
        }
    }

    /// Starts showing a transfer of `total` bytes named `label`.
    pub fn task(&self, label: &str, total: u64) -> Task {
        let label = label.to_owned();
        match &self.mode {
            Mode::Bars(m) => {
                let bar = m.add(ProgressBar::new(total));
                let style = ProgressStyle::with_template(
                    "{prefix:.bold} [{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_prefix(label.clone());
                Task {
                    bar: Some(bar),
                    label,
                    lines: false,
                }
            }
            Mode::Lines => Task {
                bar: None,
                label,
                lines: true,
            },
            Mode::Quiet => Task {
                bar: None,
                label,
                lines: false,
            },
        }
    }
}

impl Task {
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    pub fn set_position(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.set_position(n);
        }
    }

    /// Says something about the transfer (a retry, a resume) without ending it.
    pub fn say(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(msg.to_owned());
        } else if self.lines {
            eprintln!("{}: {msg}", self.label);
        }
    }

    /// Ends the transfer with a word on how (`done`, `exists`, `mounted`).
    pub fn finish(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.finish_with_message(msg.to_owned());
        } else if self.lines {
            eprintln!("{}: {msg}", self.label);
        }
    }
}

/// The short form of a digest people see in listings: 12 hex digits.
pub fn short(d: &berth_oci::Digest) -> String {
    d.hex().chars().take(12).collect()
}

/// Bytes in decimal units, as docker prints sizes.
pub fn human(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    let text = format!("{v:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{}", units[i])
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human(0), "0B");
        assert_eq!(super::human(999), "999B");
        assert_eq!(super::human(1_500), "1.5kB");
        assert_eq!(super::human(72_800_000), "72.8MB");
        assert_eq!(super::human(2_000_000_000), "2GB");
    }
}
