//! A private libvirt for the tests: libvirt's QEMU driver (`libvirtd` serving
//! `qemu:///session`) with its home, runtime, configuration and cache directories under a
//! scratch directory, so nothing of the host's libvirt is used or changed. As root it runs as
//! the unprivileged user `nobody` (session mode is libvirt's per-user daemon, and root's session
//! would be the system one); otherwise as the test's own user. Domains are defined and started
//! with `virsh`, and destroyed and undefined on drop; the daemon is killed by its PID on drop.

use crate::util::{find_binary, kill_child};
use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long libvirtd may take to open its socket.
const START: Duration = Duration::from_secs(30);
/// How long one virsh command may take.
const VIRSH: Duration = Duration::from_secs(120);

/// The binaries, or why libvirt cannot run here (for a skip line).
pub fn libvirt_binaries() -> std::result::Result<(PathBuf, PathBuf), String> {
    let find = |n| find_binary(n).map_err(|e| format!("{e:#}"));
    match (find("libvirtd"), find("virsh")) {
        (Ok(d), Ok(v)) => Ok((d, v)),
        (Err(e), _) | (_, Err(e)) => Err(format!(
            "libvirt is not installed ({e}); ci/install-deps.sh installs Debian's \
             libvirt-daemon, libvirt-daemon-driver-qemu and libvirt-clients"
        )),
    }
}

/// A running private libvirtd.
pub struct Libvirt {
    dir: PathBuf,
    virsh: PathBuf,
    user: Option<(libc::uid_t, libc::gid_t)>,
    daemon: Child,
}

impl std::fmt::Debug for Libvirt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Libvirt")
            .field("dir", &self.dir)
            .field("pid", &self.daemon.id())
            .finish()
    }
}

impl Libvirt {
    /// Starts libvirtd with every directory under `dir` (which must exist) and waits for its
    /// socket.
    pub fn start(dir: &Path) -> Result<Libvirt> {
        let (libvirtd, virsh) = libvirt_binaries().map_err(anyhow::Error::msg)?;
        let user = if euid() == 0 { Some(nobody()?) } else { None };
        for sub in ["home", "run", "config", "cache", "guests"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
            if let Some((uid, gid)) = user {
                chown(&p, uid, gid)?;
            }
        }
        std::fs::set_permissions(dir.join("run"), std::fs::Permissions::from_mode(0o700))?;
        // The daemon and its QEMU processes (as `user`) must reach the directory.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        let log = std::fs::File::create(dir.join("libvirtd.log"))?;
        let mut cmd = Command::new(&libvirtd);
        session_env(&mut cmd, dir, user);
        let daemon = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", libvirtd.display()))?;
        let mut lv = Libvirt {
            dir: dir.to_path_buf(),
            virsh,
            user,
            daemon,
        };
        let sock = dir.join("run/libvirt/libvirt-sock");
        let deadline = Instant::now() + START;
        while !sock.exists() {
            if let Ok(Some(status)) = lv.daemon.try_wait() {
                bail!("libvirtd exited ({status}):\n{}", lv.log_tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "libvirtd opened no socket at {} within {START:?}:\n{}",
                    sock.display(),
                    lv.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(lv)
    }

    /// The directory for files the guests' QEMU processes create (console sockets).
    pub fn guest_dir(&self) -> PathBuf {
        self.dir.join("guests")
    }

    /// Who the daemon and its guests run as: `nobody` when the tests run as root.
    pub fn user(&self) -> &'static str {
        if self.user.is_some() {
            "nobody"
        } else {
            "the test's user"
        }
    }

    /// The last lines of libvirtd's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("libvirtd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `virsh -c qemu:///session ARGS`, bounded; its standard output, or an error with its
    /// standard error.
    pub fn virsh(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(&self.virsh);
        session_env(&mut cmd, &self.dir, self.user);
        let mut child = cmd
            .args(["-c", "qemu:///session"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting virsh")?;
        let deadline = Instant::now() + VIRSH;
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                kill_child(&mut child);
                bail!("virsh {} did not finish within {VIRSH:?}", args.join(" "));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let Output {
            status,
            stdout,
            stderr,
        } = child.wait_with_output().context("virsh output")?;
        if !status.success() {
            bail!(
                "virsh {} failed ({status}): {}{}",
                args.join(" "),
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        }
        Ok(String::from_utf8_lossy(&stdout).into_owned())
    }

    /// Defines the domain of `xml` (named `name` in it) and starts it; destroyed and undefined
    /// when the returned guard drops.
    pub fn start_domain(&self, name: &str, xml: &str) -> Result<Domain<'_>> {
        let file = self.dir.join(format!("{name}.xml"));
        std::fs::write(&file, xml).with_context(|| format!("writing {}", file.display()))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
        let path = file.to_str().context("domain XML path is not UTF-8")?;
        self.virsh(&["define", path])?;
        let dom = Domain {
            lv: self,
            name: name.to_string(),
        };
        self.virsh(&["start", name])
            .with_context(|| format!("libvirtd log:\n{}", self.log_tail()))?;
        Ok(dom)
    }
}

impl Drop for Libvirt {
    fn drop(&mut self) {
        kill_child(&mut self.daemon);
    }
}

/// A defined, started domain of a [`Libvirt`].
#[derive(Debug)]
pub struct Domain<'a> {
    lv: &'a Libvirt,
    name: String,
}

impl Domain<'_> {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// QEMU's process id, from libvirt's pid file.
    pub fn qemu_pid(&self) -> Option<libc::pid_t> {
        let f = self
            .lv
            .dir
            .join(format!("run/libvirt/qemu/run/{}.pid", self.name));
        std::fs::read_to_string(f).ok()?.trim().parse().ok()
    }
}

impl Drop for Domain<'_> {
    fn drop(&mut self) {
        let pid = self.qemu_pid();
        let _ = self.lv.virsh(&["destroy", &self.name]);
        let _ = self.lv.virsh(&["undefine", &self.name]);
        // If libvirt could not stop it, the QEMU it started for this test is killed by PID.
        if let Some(pid) = pid {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.starts_with("qemu") {
                // SAFETY: kill has no memory-safety preconditions; the pid is the QEMU this
                // test's libvirtd started (checked by its name just above).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// The environment of a private session daemon and its clients: every directory under `dir`,
/// and, when `user` is given, that user's identity (set in the child before exec).
fn session_env(cmd: &mut Command, dir: &Path, user: Option<(libc::uid_t, libc::gid_t)>) {
    cmd.env("HOME", dir.join("home"))
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env_remove("LIBVIRT_DEFAULT_URI");
    if let Some((uid, gid)) = user {
        // SAFETY: setgroups, setgid and setuid are async-signal-safe system calls that touch
        // no memory of the parent; the closure allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

fn euid() -> libc::uid_t {
    // SAFETY: geteuid cannot fail and has no preconditions.
    unsafe { libc::geteuid() }
}

/// The uid and gid of `nobody`.
fn nobody() -> Result<(libc::uid_t, libc::gid_t)> {
    let name = CString::new("nobody").context("user name")?;
    // SAFETY: passwd is plain data (integers and pointers); all zeroes is a valid value that
    // getpwnam_r overwrites.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: the name is NUL-terminated, pw and buf outlive the call, and buf.len() is the
    // buffer's size; getpwnam_r (reentrant) writes only into pw, buf and found.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        bail!("no user `nobody` to run libvirt's session daemon as");
    }
    Ok((pw.pw_uid, pw.pw_gid))
}

fn chown(p: &Path, uid: libc::uid_t, gid: libc::gid_t) -> Result<()> {
    std::os::unix::fs::chown(p, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", p.display()))
}
