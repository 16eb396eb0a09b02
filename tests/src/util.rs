//! Small helpers: scratch directories, finding binaries, collecting a child's output.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest path a Unix socket address can hold (`sun_path`, including the NUL).
pub const UNIX_PATH_MAX: usize = 108;

/// A scratch directory under the system temp dir, removed (with its contents) on drop unless
/// `VSW_KEEP_SCRATCH=1`. Its path is short so that Unix socket paths inside it fit `sun_path`.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    keep: bool,
}

impl ScratchDir {
    /// Creates `/tmp/vsw-<tag>-<pid>-<n>` (or under `$TMPDIR`).
    pub fn new(tag: &str) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag: String = tag
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(24)
            .collect();
        let path = std::env::temp_dir().join(format!("vsw-{tag}-{}-{n}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing stale scratch dir {}", path.display()))?;
        }
        std::fs::create_dir_all(&path)
            .with_context(|| format!("creating scratch dir {}", path.display()))?;
        let keep = std::env::var("VSW_KEEP_SCRATCH").is_ok_and(|v| v == "1");
        Ok(Self { path, keep })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// A path inside the directory for a Unix socket; fails if it would not fit `sun_path`.
    pub fn socket_path(&self, name: &str) -> Result<PathBuf> {
        let p = self.path.join(name);
        check_socket_path(&p)?;
        Ok(p)
    }

    /// Keep the directory after drop (e.g. to look at console logs of a failing test).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("vswitch-tests: keeping scratch dir {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Fails if `p` is too long to be bound or connected as a Unix socket.
pub fn check_socket_path(p: &Path) -> Result<()> {
    let len = p.as_os_str().len();
    if len >= UNIX_PATH_MAX {
        bail!(
            "socket path {} is {len} bytes, longer than the {} a Unix socket address allows",
            p.display(),
            UNIX_PATH_MAX - 1
        );
    }
    Ok(())
}

/// Finds an executable: `$VSW_QEMU` / `$VSW_TESTPMD` / `$VSW_<NAME>` (upper case, `-` → `_`) if set, else `$PATH`, else the
/// usual system directories (`/usr/sbin`, `/sbin`, `/usr/local/bin`, ...). The error says how
/// to get it.
pub fn find_binary(name: &str) -> Result<PathBuf> {
    let var = match name {
        "qemu-system-x86_64" => "VSW_QEMU".to_string(),
        "dpdk-testpmd" => "VSW_TESTPMD".to_string(),
        _ => format!("VSW_{}", name.to_ascii_uppercase().replace(['-', '.'], "_")),
    };
    if let Ok(p) = std::env::var(&var) {
        let p = PathBuf::from(p);
        if is_executable(&p) {
            return Ok(p);
        }
        bail!(
            "${var} is set to {}, which is not an executable file",
            p.display()
        );
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ];
    for dir in std::env::split_paths(&path).chain(extra.iter().map(PathBuf::from)) {
        let p = dir.join(name);
        if is_executable(&p) {
            return Ok(p);
        }
    }
    bail!(
        "'{name}' not found on PATH or in the system directories (set ${var} to its path, or \
         install it: ci/install-deps.sh as root installs everything the tests need)"
    )
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Output of a child process collected by a background thread: bytes (with `\r` removed), a
/// flag set at EOF, and a condition variable to wait for new data.
#[derive(Debug, Default)]
pub struct OutputBuf {
    state: Mutex<OutputState>,
    cond: Condvar,
}

#[derive(Debug, Default)]
pub struct OutputState {
    pub data: Vec<u8>,
    pub eof: bool,
}

impl OutputBuf {
    /// Starts a thread that copies `reader` into a new buffer, and into `log` if given; with
    /// `echo_prefix`, also to stderr line by line (the harness's purpose: showing guest output).
    pub fn collect<R: Read + Send + 'static>(
        reader: R,
        mut log: Option<std::fs::File>,
        echo_prefix: Option<String>,
    ) -> (Arc<Self>, JoinHandle<()>) {
        let buf = Arc::new(Self::default());
        let b = Arc::clone(&buf);
        let handle = std::thread::spawn(move || {
            let mut reader = reader;
            let mut chunk = [0u8; 4096];
            let mut line = Vec::new();
            loop {
                let n = match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let bytes: Vec<u8> = chunk[..n].iter().copied().filter(|&c| c != b'\r').collect();
                if let Some(f) = log.as_mut() {
                    let _ = f.write_all(&bytes);
                }
                if let Some(prefix) = echo_prefix.as_deref() {
                    for &c in &bytes {
                        if c == b'\n' {
                            eprintln!("[{prefix}] {}", String::from_utf8_lossy(&line));
                            line.clear();
                        } else {
                            line.push(c);
                        }
                    }
                }
                let mut st = b.lock();
                st.data.extend_from_slice(&bytes);
                b.cond.notify_all();
            }
            let mut st = b.lock();
            st.eof = true;
            b.cond.notify_all();
        });
        (buf, handle)
    }

    pub fn lock(&self) -> MutexGuard<'_, OutputState> {
        // A poisoned lock only means a reader thread panicked mid-append; the bytes are fine.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Current length of the collected output.
    pub fn len(&self) -> usize {
        self.lock().data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Everything collected so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.lock().data).into_owned()
    }

    /// The last `n` lines collected so far.
    pub fn tail(&self, n: usize) -> String {
        let text = self.text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits until `f(data[from..])` returns `Some`, or the deadline passes (`Ok(None)`), or the
    /// stream ends without a match (`Err`). `f` is called under the lock: keep it cheap.
    pub fn wait_for<T>(
        &self,
        from: usize,
        deadline: Instant,
        mut f: impl FnMut(&[u8]) -> Option<T>,
    ) -> Result<Option<T>> {
        let mut st = self.lock();
        loop {
            let start = from.min(st.data.len());
            if let Some(v) = f(&st.data[start..]) {
                return Ok(Some(v));
            }
            if st.eof {
                bail!("output ended (process exited) before the expected text appeared");
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let wait = (deadline - now).min(Duration::from_millis(500));
            st = self
                .cond
                .wait_timeout(st, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

/// Finds `needle` in `hay`.
pub fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Polls `f` every `interval` until it returns true or `timeout` passes; returns whether it did.
pub fn wait_until(timeout: Duration, interval: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(interval);
    }
}

/// Sends SIGKILL to a child and reaps it. Only ever called on processes this crate spawned.
pub fn kill_child(child: &mut std::process::Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill(); // kill(pid, SIGKILL)
    }
    let _ = child.wait();
}

/// Sends SIGTERM to a child we spawned, waits up to `grace`, then SIGKILLs it.
pub fn terminate_child(child: &mut std::process::Child, grace: Duration) {
    if let Ok(None) = child.try_wait() {
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) on the PID of our own unreaped child: it cannot have been reused.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let exited = wait_until(grace, Duration::from_millis(20), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = child.kill();
        }
    }
    let _ = child.wait();
}

/// `anyhow::Result` → its value, or a panic that shows the whole error chain (`{e:#}`): what the
/// integration tests use instead of `unwrap`.
pub trait OrPanic<T> {
    /// The value, or a panic with the error and its causes.
    fn or_panic(self) -> T;
}

impl<T> OrPanic<T> for Result<T> {
    fn or_panic(self) -> T {
        self.unwrap_or_else(|e| panic!("{e:#}"))
    }
}
