//! A child process's output, collected line by line.

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

/// Output of a child process, collected line by line from stdout and stderr.
#[derive(Default)]
pub(super) struct Output {
    text: Mutex<String>,
}

impl Output {
    pub(super) fn collect(self: &Arc<Self>, r: impl Read + Send + 'static) -> JoinHandle<()> {
        let me = Arc::clone(self);
        thread::spawn(move || {
            let mut r = BufReader::new(r);
            let mut line = Vec::new();
            while matches!(r.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                me.text
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&String::from_utf8_lossy(&line));
                line.clear();
            }
        })
    }

    pub(super) fn text(&self) -> String {
        self.text.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(super) fn contains(&self, needle: &str) -> bool {
        self.text
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(needle)
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
