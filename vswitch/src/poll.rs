//! Busy-poll mode: threads pinned to dedicated CPUs pass over their ports in a loop
//! (`datapath.rs`) instead of waiting for guest kicks. Costs a whole CPU per thread; saves the kick and wake-up per
//! batch and lets guests stop kicking altogether.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use log::{info, warn};

use crate::core::Core;
use crate::datapath::{Share, Worker};

/// Pins the calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET initialise it before the call, and
    // sched_setaffinity only reads it.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Starts one polling thread per CPU in `cores`; thread `i` serves the ports whose id is
/// `i` modulo the number of threads.
pub(crate) fn start_pollers(
    core: &Arc<Core>,
    cores: &[usize],
    stop: &Arc<AtomicBool>,
) -> Vec<JoinHandle<()>> {
    let n = cores.len();
    let mut threads = Vec::new();
    for (i, &cpu) in cores.iter().enumerate() {
        let (core, stop) = (core.clone(), stop.clone());
        let t = thread::Builder::new()
            .name(format!("poll-{cpu}"))
            .spawn(move || {
                if let Err(e) = pin_current_thread(cpu) {
                    warn!("poll thread {i}: cannot pin to CPU {cpu}: {e}");
                }
                info!("poll thread {i} on CPU {cpu}");
                let mut worker = Worker::new(Share { index: i, of: n });
                let mut idle = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    if worker.pass(&core) {
                        idle = 0;
                    } else {
                        idle = idle.saturating_add(1);
                        if idle > 1024 {
                            // Long idle: let the scheduler run someone else on this CPU.
                            thread::yield_now();
                        } else {
                            std::hint::spin_loop();
                        }
                    }
                }
            });
        match t {
            Ok(t) => threads.push(t),
            Err(e) => warn!("cannot start poll thread for CPU {cpu}: {e}"),
        }
    }
    threads
}
