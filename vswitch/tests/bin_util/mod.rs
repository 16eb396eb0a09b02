//! Running the built `vswitch` binary from integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long anything may take before the test gives up (a hang guard, not a measurement).
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vswitch"))
}

/// Runs `vswitch` with `args` to completion (killing it after [`DEADLINE`]).
pub fn run_to_end(args: &[&str]) -> Output {
    let child = bin()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vswitch");
    wait_output(child)
}

/// Waits for `child` (killing it after [`DEADLINE`]) and collects its output.
pub fn wait_output(mut child: Child) -> Output {
    let start = Instant::now();
    loop {
        match child.try_wait().expect("try_wait") {
            Some(_) => break,
            None if start.elapsed() > DEADLINE => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("wait");
                panic!(
                    "vswitch did not exit within {DEADLINE:?}; stderr:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => thread::sleep(Duration::from_millis(20)),
        }
    }
    child.wait_with_output().expect("wait_with_output")
}

/// A `vswitch run` in the background; killed on drop if still running.
pub struct Running {
    child: Option<Child>,
}

impl Running {
    /// Starts `vswitch run` with `args` and waits until every path in `ready` exists.
    pub fn start(args: &[String], ready: &[PathBuf]) -> Running {
        Running::start_env(args, &[], ready)
    }

    /// [`Running::start`] with environment variables `env` set for the switch.
    pub fn start_env(args: &[String], env: &[(&str, &Path)], ready: &[PathBuf]) -> Running {
        let child = bin()
            .envs(env.iter().copied())
            .arg("run")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vswitch run");
        let mut r = Running { child: Some(child) };
        let start = Instant::now();
        while !ready.iter().all(|p| p.exists()) {
            if let Some(status) = r.child_mut().try_wait().expect("try_wait") {
                let out = r.take().wait_with_output().expect("output");
                panic!(
                    "vswitch run exited early ({status}); stderr:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(
                start.elapsed() < DEADLINE,
                "sockets {ready:?} never appeared"
            );
            thread::sleep(Duration::from_millis(20));
        }
        r
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("running")
    }

    fn take(&mut self) -> Child {
        self.child.take().expect("running")
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child_mut().try_wait(), Ok(None))
    }

    /// Sends `sig` and waits for the exit; returns the status and stderr.
    pub fn stop_with(mut self, sig: i32) -> (ExitStatus, String) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our live child's.
        let r = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(r, 0, "kill failed");
        let out = wait_output(self.take());
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Files in `dir` (names), sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
