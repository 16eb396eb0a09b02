//! Unit tests: the happy paths (file only, flags only, both) here, every refusal of a port or
//! a setting in [`refusals`], uplinks (and VEPA ports, which need one) in [`uplinks`].

mod refusals;
mod uplinks;

use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;
use vswitch_channels::{ChannelId, ChannelMode, MacAddr, Policy};
use vswitch_vhost::SocketRole;

use super::*;

/// A fresh directory under the system temp dir, removed on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("vsw-cfg-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn ch(v: u16) -> ChannelId {
    ChannelId::new(v).expect("valid channel")
}

pub(super) fn flags(ports: &[String]) -> Sources {
    Sources {
        ports: ports.to_vec(),
        ..Sources::default()
    }
}

pub(super) fn from_flags(ports: &[String]) -> Result<Config, ConfigError> {
    Config::from_text(None, &flags(ports))
}

pub(super) fn from_file(text: &str) -> Result<Config, ConfigError> {
    Config::from_text(Some((Path::new("test.toml"), text)), &Sources::default())
}

pub(super) fn err_flags(ports: &[String]) -> (ConfigError, String) {
    let e = from_flags(ports).expect_err("must be refused");
    let msg = e.to_string();
    (e, msg)
}

pub(super) fn err_file(text: &str) -> (ConfigError, String) {
    let e = from_file(text).expect_err("must be refused");
    let msg = e.to_string();
    (e, msg)
}

#[test]
fn flags_only() {
    let d = TempDir::new("flags");
    let a = format!("vm1,socket={},channel=100", d.path("a.sock"));
    let b = format!(
        "vm2,socket={},channel=200,mac=52:54:00:00:00:02,mode=connect,mac-limit=8,mtu=9000,queues=4",
        d.path("b.sock")
    );
    let c = from_flags(&[a, b]).expect("valid");
    assert_eq!(c.ports.len(), 2);
    let p = &c.ports[0];
    assert_eq!(
        (p.name.as_str(), p.channel, p.role),
        ("vm1", ch(100), SocketRole::Listen)
    );
    assert_eq!((p.mac, p.mac_limit, p.mtu, p.queues), (None, None, 1500, 1));
    assert_eq!(p.channel_mode, ChannelMode::Veb);
    let p = &c.ports[1];
    assert_eq!(
        (p.name.as_str(), p.channel, p.role),
        ("vm2", ch(200), SocketRole::Connect)
    );
    assert_eq!(p.mac, Some(MacAddr([0x52, 0x54, 0, 0, 0, 2])));
    assert_eq!((p.mac_limit, p.mtu, p.queues), (Some(8), 9000, 4));
    assert_eq!(c.policy, Policy::new());
    assert_eq!(c.settings, crate::spec::SwitchSettings::default());
    assert_eq!((c.ctl, c.stats_interval, c.log_level), (None, None, None));
}

#[test]
fn spec_accepts_name_key_and_underscore_aliases() {
    let d = TempDir::new("alias");
    let a = format!(
        "name=vm1,socket={},channel=7,mac_limit=3,channel-mode=veb",
        d.path("a.sock")
    );
    let c = from_flags(&[a]).expect("valid");
    assert_eq!(c.ports[0].name, "vm1");
    assert_eq!(c.ports[0].mac_limit, Some(3));
}

#[test]
fn file_only() {
    let d = TempDir::new("file");
    let text = format!(
        r#"
[switch]
ctl = "{ctl}"
stats_interval_s = 10
log_level = "debug"
poll_cores = [{cpu}]

[fdb]
aging_s = 60
mac_limit = 100
capacity = 1024

[policy]
allow = [[100, 200], [200, "300"]]

[[port]]
name = "vm1"
socket = "{a}"
channel = 100
mac = "52:54:00:00:00:01"
mode = "listen"
mac-limit = 64
mtu = 1500
queues = 2

[[port]]
name = "vm2"
socket = "{b}"
channel = "200"
mac_limit = 5
"#,
        ctl = d.path("ctl.sock"),
        a = d.path("a.sock"),
        b = d.path("b.sock"),
        cpu = cpu0()
    );
    let c = from_file(&text).expect("valid");
    assert_eq!(c.ports.len(), 2);
    assert_eq!(c.ports[0].mac_limit, Some(64));
    assert_eq!((c.ports[0].queues, c.ports[1].queues), (2, 1));
    assert_eq!(c.ports[1].mac_limit, Some(5));
    assert_eq!(c.ports[1].channel, ch(200));
    assert_eq!(c.settings.aging, Duration::from_secs(60));
    assert_eq!((c.settings.mac_limit, c.settings.fdb_capacity), (100, 1024));
    assert!(c.policy.admits(ch(100), ch(200)));
    assert!(c.policy.admits(ch(200), ch(300)));
    assert!(!c.policy.admits(ch(200), ch(100)));
    assert_eq!(c.ctl, Some(PathBuf::from(d.path("ctl.sock"))));
    assert_eq!(c.stats_interval, Some(Duration::from_secs(10)));
    assert_eq!(c.log_level, Some(LevelFilter::Debug));
    assert_eq!(c.settings.poll_cores, [cpu0()]);
}

#[test]
fn file_and_flags_combine_file_first_and_flags_override() {
    let d = TempDir::new("both");
    let text = format!(
        "[switch]\nctl = \"{}\"\nlog_level = \"warn\"\n[[port]]\nname = \"f1\"\nsocket = \"{}\"\nchannel = 1\n",
        d.path("ctl-file.sock"),
        d.path("f1.sock")
    );
    let src = Sources {
        ports: vec![format!("g1,socket={},channel=2", d.path("g1.sock"))],
        uplinks: Vec::new(),
        ctl: Some(PathBuf::from(d.path("ctl-flag.sock"))),
        ctl_env: Some(PathBuf::from(d.path("ctl-env.sock"))),
        metrics: Some("127.0.0.1:9471".into()),
        log_level: Some("trace".into()),
        stats_interval_s: Some(5),
        poll_cores: Some(cpu0().to_string()),
        event_threads: Some(3),
        file: None,
        state: None,
    };
    let c = Config::from_text(Some((Path::new("x.toml"), &text)), &src).expect("valid");
    let names: Vec<_> = c.ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["f1", "g1"]);
    assert_eq!(c.ctl, Some(PathBuf::from(d.path("ctl-flag.sock"))));
    assert_eq!(c.metrics, "127.0.0.1:9471".parse().ok());
    assert_eq!(c.log_level, Some(LevelFilter::Trace));
    assert_eq!(c.stats_interval, Some(Duration::from_secs(5)));
    assert_eq!(c.settings.poll_cores, [cpu0()]);
    assert_eq!(c.settings.event_threads, 3);
}

#[test]
fn event_threads_default_to_one_and_come_from_the_file() {
    let d = TempDir::new("event-threads");
    let port = format!(
        "[[port]]\nname = \"f1\"\nsocket = \"{}\"\nchannel = 1\n",
        d.path("f1.sock")
    );
    assert_eq!(from_file(&port).expect("valid").settings.event_threads, 1);
    let text = format!("[switch]\nevent_threads = 4\n{port}");
    assert_eq!(from_file(&text).expect("valid").settings.event_threads, 4);
}

/// A CPU this process may run on.
fn cpu0() -> usize {
    super::cpus::allowed_cpus().first().copied().unwrap_or(0)
}

#[test]
fn load_reads_the_file_and_reports_a_missing_one() {
    let d = TempDir::new("load");
    let file = d.0.join("v.toml");
    let text = format!(
        "[[port]]\nname = \"vm1\"\nsocket = \"{}\"\nchannel = 9\n",
        d.path("a.sock")
    );
    std::fs::write(&file, text).expect("write");
    let src = Sources {
        file: Some(file.clone()),
        ..Sources::default()
    };
    assert_eq!(Config::load(&src).expect("valid").ports[0].channel, ch(9));
    let src = Sources {
        file: Some(d.0.join("missing.toml")),
        ..Sources::default()
    };
    let e = Config::load(&src).expect_err("missing");
    assert!(matches!(e, ConfigError::ReadFile { .. }));
    assert!(e.to_string().contains("missing.toml") && e.to_string().contains("--config"));
}

#[test]
fn api_ports_from_text_and_json() {
    let d = TempDir::new("api");
    let spec = port_from_spec(&format!("vm9,socket={},channel=3", d.path("a.sock"))).expect("ok");
    assert_eq!(spec.channel, ch(3));
    let v = serde_json::json!({"name": "vm9", "socket": d.path("b.sock"), "channel": 4, "mac-limit": 2});
    let spec = port_from_json(v).expect("ok");
    assert_eq!((spec.channel, spec.mac_limit), (ch(4), Some(2)));
    let v = serde_json::json!({"name": "vm9", "socket": d.path("b.sock"), "channel": 4, "vlan": 2});
    let e = port_from_json(v).expect_err("unknown");
    assert!(
        matches!(&e, ConfigError::UnknownKey { key, .. } if key == "vlan"),
        "{e:?}"
    );
    assert!(e.to_string().starts_with("add-port request"), "{e}");
    let e = port_from_json(serde_json::json!([1])).expect_err("not an object");
    assert!(matches!(e, ConfigError::MalformedSpec { .. }));
}

/// The control socket: flag, then VSWITCH_CTL, then `[switch] ctl`, then (None) the default.
#[test]
fn ctl_socket_precedence_is_flag_env_file_default() {
    let d = TempDir::new("ctlprec");
    let text = |ctl: bool| {
        let mut t = String::new();
        if ctl {
            t.push_str(&format!("[switch]\nctl = \"{}\"\n", d.path("file.sock")));
        }
        t.push_str(&format!(
            "[[port]]\nname = \"a\"\nsocket = \"{}\"\nchannel = 1\n",
            d.path("a.sock")
        ));
        t
    };
    let path = |n: &str| Some(PathBuf::from(d.path(n)));
    let load = |file_ctl: bool, flag: Option<PathBuf>, env: Option<PathBuf>| {
        let src = Sources {
            ctl: flag,
            ctl_env: env,
            ..Sources::default()
        };
        Config::from_text(Some((Path::new("x.toml"), &text(file_ctl))), &src)
            .expect("valid")
            .ctl
    };
    assert_eq!(
        load(true, path("flag.sock"), path("env.sock")),
        path("flag.sock")
    );
    assert_eq!(load(true, None, path("env.sock")), path("env.sock"));
    assert_eq!(load(true, None, None), path("file.sock"));
    assert_eq!(load(false, None, None), None);
    // A bad path from the environment is refused naming the variable.
    let src = Sources {
        ctl_env: Some(PathBuf::from("/nonexistent-dir/ctl.sock")),
        ..Sources::default()
    };
    let e = Config::from_text(Some((Path::new("x.toml"), &text(false))), &src)
        .expect_err("missing directory")
        .to_string();
    assert!(e.contains("VSWITCH_CTL"), "{e}");
}
