//! A process's resource usage read from /proc (open descriptors, threads, memory), and the
//! check the fault-cycle tests make with it: descriptors and threads exactly back to a
//! baseline, memory within a stated tolerance.

use crate::util::wait_until;
use anyhow::{bail, Context, Result};
use std::fmt;
use std::time::Duration;

/// One reading of a process's resources. Memory in KiB, as /proc/PID/status reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcUsage {
    /// Entries in /proc/PID/fd.
    pub fds: usize,
    /// Entries in /proc/PID/task.
    pub threads: usize,
    /// VmSize: the whole address space (a mapping that is never unmapped shows here in full,
    /// touched or not).
    pub vm_size_kib: u64,
    /// VmSize without the inaccessible (`---p`) mappings: address space reserved but not
    /// usable, such as the 64 MiB glibc reserves for each malloc arena (a thread that finds
    /// all arenas busy creates one; at most 8 per core, never freed) or stack guard pages.
    /// A leaked guest mapping (read-write) counts here in full.
    pub vm_usable_kib: u64,
    /// VmRSS = RssAnon + RssFile + RssShmem.
    pub rss_kib: u64,
    /// Heap and other private memory.
    pub rss_anon_kib: u64,
    /// The binary and libraries.
    pub rss_file_kib: u64,
    /// Shared memory: the pages of guests' memory (memfd) the process has touched.
    pub rss_shmem_kib: u64,
}

impl ProcUsage {
    /// Reads /proc/PID/{fd,task,status}.
    pub fn of(pid: u32) -> Result<Self> {
        let count = |what: &str| -> Result<usize> {
            let dir = format!("/proc/{pid}/{what}");
            Ok(std::fs::read_dir(&dir)
                .with_context(|| format!("reading {dir}"))?
                .count())
        };
        let fds = count("fd")?;
        let threads = count("task")?;
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let kib = |key: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no {key} in {path}"))
        };
        let maps_path = format!("/proc/{pid}/maps");
        let maps =
            std::fs::read_to_string(&maps_path).with_context(|| format!("reading {maps_path}"))?;
        let reserved: u64 = maps
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (range, perms) = (f.next()?, f.next()?);
                if !perms.starts_with("---") {
                    return None;
                }
                let (a, b) = range.split_once('-')?;
                let (a, b) = (
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                );
                Some(b.saturating_sub(a) / 1024)
            })
            .sum();
        let vm_size_kib = kib("VmSize")?;
        Ok(Self {
            fds,
            threads,
            vm_size_kib,
            vm_usable_kib: vm_size_kib.saturating_sub(reserved),
            rss_kib: kib("VmRSS")?,
            rss_anon_kib: kib("RssAnon")?,
            rss_file_kib: kib("RssFile")?,
            rss_shmem_kib: kib("RssShmem")?,
        })
    }

    /// Reads the usage of `pid` until two readings `interval` apart agree on descriptors and
    /// threads (nothing being set up or torn down), or `timeout` passes; returns the last.
    pub fn steady(pid: u32, interval: Duration, timeout: Duration) -> Result<Self> {
        let mut last = Self::of(pid)?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            std::thread::sleep(interval);
            let now = Self::of(pid)?;
            let same = now.fds == last.fds && now.threads == last.threads;
            last = now;
            if same || std::time::Instant::now() >= deadline {
                return Ok(last);
            }
        }
    }

    /// Reads the usage of `pid` until its descriptors and threads are back to `baseline`'s
    /// (a connection being torn down, a control client being served, a connect attempt in
    /// flight hold some for a moment), or `timeout` passes; returns the last reading.
    pub fn settled(pid: u32, baseline: &ProcUsage, timeout: Duration) -> Result<Self> {
        let mut last = Self::of(pid)?;
        let mut err = None;
        wait_until(timeout, Duration::from_millis(50), || match Self::of(pid) {
            Ok(u) => {
                last = u;
                u.fds == baseline.fds && u.threads == baseline.threads
            }
            Err(e) => {
                err = Some(e);
                true
            }
        });
        match err {
            Some(e) => Err(e),
            None => Ok(last),
        }
    }

    /// Fails unless descriptors and threads equal `baseline`'s exactly and VmRSS and the usable
    /// address space ([`vm_usable_kib`](Self::vm_usable_kib)) grew by at most the given
    /// tolerances (shrinking is fine).
    pub fn check_flat(&self, baseline: &ProcUsage, tol: MemTolerance) -> Result<()> {
        let mut bad = Vec::new();
        if self.fds != baseline.fds {
            bad.push(format!("open fds {} -> {}", baseline.fds, self.fds));
        }
        if self.threads != baseline.threads {
            bad.push(format!("threads {} -> {}", baseline.threads, self.threads));
        }
        let grew = |a: u64, b: u64| b.saturating_sub(a);
        if grew(baseline.rss_kib, self.rss_kib) > tol.rss_kib {
            bad.push(format!(
                "VmRSS grew by {} KiB (tolerance {} KiB)",
                grew(baseline.rss_kib, self.rss_kib),
                tol.rss_kib
            ));
        }
        if grew(baseline.vm_usable_kib, self.vm_usable_kib) > tol.vm_size_kib {
            bad.push(format!(
                "usable VmSize grew by {} KiB (tolerance {} KiB)",
                grew(baseline.vm_usable_kib, self.vm_usable_kib),
                tol.vm_size_kib
            ));
        }
        if !bad.is_empty() {
            bail!(
                "resources not flat: {}\n  before: {baseline}\n  after:  {self}",
                bad.join("; ")
            );
        }
        Ok(())
    }
}

impl fmt::Display for ProcUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fds {} threads {} VmRSS {} KiB (anon {} file {} shmem {}) VmSize {} KiB \
             (usable {})",
            self.fds,
            self.threads,
            self.rss_kib,
            self.rss_anon_kib,
            self.rss_file_kib,
            self.rss_shmem_kib,
            self.vm_size_kib,
            self.vm_usable_kib
        )
    }
}

/// How much VmRSS and VmSize may grow across a cycle set after warm-up.
#[derive(Debug, Clone, Copy)]
pub struct MemTolerance {
    pub rss_kib: u64,
    /// Applies to the usable address space ([`ProcUsage::vm_usable_kib`]).
    pub vm_size_kib: u64,
}
