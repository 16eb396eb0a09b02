//! Operating-system helpers: CPU pinning, CPU-time clocks, machine facts.

use std::os::unix::thread::JoinHandleExt;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{bail, Result};

/// Pins the calling thread to one CPU. Threads it spawns afterwards inherit the affinity.
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        bail!("CPU {cpu} is out of range");
    }
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET initialise it (cpu < CPU_SETSIZE was
    // checked) and sched_setaffinity only reads it for the duration of the call.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r != 0 {
        bail!(
            "sched_setaffinity(CPU {cpu}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// CPUs the calling thread may run on.
pub fn current_affinity() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size into it, and
    // CPU_ISSET only reads it with indices below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    if r != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time consumed by the whole process (all threads), in ns.
pub fn process_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// CPU time consumed by the calling thread, in ns.
pub fn self_thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time consumed so far by another (still running) thread of this process, in ns.
pub fn thread_cpu_ns<T>(h: &JoinHandle<T>) -> u64 {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the pthread_t comes from a JoinHandle that has not been joined, so the thread
    // id is valid; `clock` is a valid out-pointer.
    let r = unsafe { libc::pthread_getcpuclockid(h.as_pthread_t(), &mut clock) };
    if r != 0 {
        return 0;
    }
    clock_ns(clock)
}

/// Number of online CPUs.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The first "model name" of /proc/cpuinfo.
pub fn cpu_model() -> String {
    cpuinfo_field("model name").unwrap_or_else(|| "unknown CPU".into())
}

/// The clock in MHz the kernel reports (/proc/cpuinfo "cpu MHz"); on a VM this is the TSC rate.
pub fn cpu_mhz() -> Option<f64> {
    cpuinfo_field("cpu MHz").and_then(|v| v.parse().ok())
}

fn cpuinfo_field(name: &str) -> Option<String> {
    let s = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    s.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim().to_string())
    })
}

/// Finds an executable on PATH (or an absolute path that exists).
pub fn find_binary(name: &str) -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(name);
    if p.is_absolute() {
        return p.exists().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|c| c.is_file())
}

/// Clock ticks per second of /proc's CPU times.
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Busy CPU time of the whole machine in clock ticks (all CPUs; idle and iowait excluded).
pub fn machine_busy_ticks() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = s.lines().next() else {
        return 0;
    };
    // cpu user nice system idle iowait irq softirq steal ...
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    [0usize, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| v.get(i))
        .sum()
}

/// CPU time (user + system, all threads) of process `pid` in clock ticks; 0 if it is gone.
pub fn process_ticks(pid: u32) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which may contain spaces) start at state (field 3).
    let Some(rest) = s.rfind(')').map(|i| &s[i + 1..]) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. indices 11 and 12 after the state.
    let get = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// CPU time used by other processes of the machine while `f` runs, in CPUs (1.0 = one CPU
/// fully taken): machine busy time minus this process's and the forwarder's.
///
/// This process's own time is its CPU clock, not its tick counts: softirqs that run in its
/// threads' system calls (the two-host scenarios' network receive path) are in the clock, while
/// /proc counts their ticks as softirq, not as the process's.
pub fn foreign_load<T>(pids: &[u32], f: impl FnOnce() -> T) -> (T, f64) {
    let tck = clk_tck();
    let ours = || {
        process_cpu_ns() as f64 / 1e9
            + pids.iter().map(|&p| process_ticks(p)).sum::<u64>() as f64 / tck
    };
    let (m0, o0, t0) = (machine_busy_ticks(), ours(), Instant::now());
    let r = f();
    let (m1, o1, secs) = (machine_busy_ticks(), ours(), t0.elapsed().as_secs_f64());
    let foreign = ((m1 - m0) as f64 / tck - (o1 - o0)).max(0.0);
    (r, foreign / secs.max(1e-9))
}

/// CPU time (user + system) the kernel's softirq threads (`ksoftirqd/N`) have used so far, in
/// ns (tick resolution): network receive work the kernel defers to them is not charged to the
/// threads that caused it.
pub fn softirqd_ns() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let ticks: u64 = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("ksoftirqd/"))
        })
        .map(process_ticks)
        .sum();
    (ticks as f64 / clk_tck() * 1e9) as u64
}
