//! `vswitch ctl` as people and scripts use it: the control socket found without `--ctl`
//! (VSWITCH_CTL, `--config FILE`), tables by default, `--json` for scripts, errors that say
//! what to do, and the completion script and man page.

mod bin_util;

use std::path::Path;
use std::process::Output;

use bin_util::{bin, run_to_end, wait_output, Running};
use serde_json::Value;
use tempfile::TempDir;

/// `vswitch ctl ARGS` with `VSWITCH_CTL` set to `ctl` (no `--ctl`).
fn ctl_env(ctl: &Path, args: &[&str]) -> Output {
    let child = bin()
        .env("VSWITCH_CTL", ctl)
        .arg("ctl")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn vswitch ctl");
    wait_output(child)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_socket_comes_from_the_environment_or_the_config_and_tables_read_well() {
    let d = TempDir::new().expect("tempdir");
    let (ctl, a, b) = (
        d.path().join("ctl.sock"),
        d.path().join("a.sock"),
        d.path().join("b.sock"),
    );
    // `run` without --ctl serves VSWITCH_CTL.
    let _sw = Running::start_env(
        &[
            format!(
                "--port=vm1,socket={},channel=100,mac=52:54:00:00:00:01",
                a.display()
            ),
            format!("--port=vm2,socket={},channel=200", b.display()),
        ],
        &[("VSWITCH_CTL", &ctl)],
        &[a.clone(), b.clone(), ctl.clone()],
    );

    // A table: a header, one aligned row per port.
    let out = ctl_env(&ctl, &["ports"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    for col in [
        "PORT", "CHANNEL", "MODE", "MAC", "STATE", "RX", "TX", "DROPS",
    ] {
        assert!(lines[0].contains(col), "no {col} column: {table}");
    }
    assert!(
        lines[1].starts_with("vm1       100  veb   listen  52:54:00:00:00:01  down"),
        "{table}"
    );
    let state_at = lines[0].find("STATE").expect("STATE");
    assert_eq!(&lines[2][state_at..state_at + 4], "down", "{table}");

    // The same answer as JSON, for scripts; --json before or after the command.
    for args in [["--json", "ports"], ["ports", "--json"]] {
        let out = ctl_env(&ctl, &args);
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(v[0]["name"], "vm1");
        assert_eq!(v[1]["channel"], 200);
    }
    let out = ctl_env(&ctl, &["fdb"]);
    assert!(
        text(&out.stdout).contains("52:54:00:00:00:01  vm1"),
        "{}",
        text(&out.stdout)
    );
    let out = ctl_env(&ctl, &["channels"]);
    assert_eq!(
        text(&out.stdout),
        "CHANNEL  PORTS\n    100  vm1\n    200  vm2\n"
    );
    let out = ctl_env(&ctl, &["stats"]);
    assert!(
        text(&out.stdout).contains("no drops"),
        "{}",
        text(&out.stdout)
    );
    // Metrics: the Prometheus text, or that text as a JSON string.
    let out = ctl_env(&ctl, &["metrics"]);
    assert!(
        text(&out.stdout).starts_with("# HELP"),
        "{}",
        text(&out.stdout)
    );
    let out = ctl_env(&ctl, &["metrics", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(v
        .as_str()
        .is_some_and(|t| t.contains("vswitch_port_in_frames_total")));

    // --config FILE names the socket by its [switch] ctl; --ctl beats the environment.
    let conf = d.path().join("vswitch.toml");
    std::fs::write(&conf, format!("[switch]\nctl = \"{}\"\n", ctl.display())).expect("write");
    let out = run_to_end(&["ctl", "--config", &conf.display().to_string(), "channels"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let other = ctl.display().to_string();
    let out = ctl_env(&d.path().join("none.sock"), &["--ctl", &other, "channels"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Errors say what and what to do.
    let out = ctl_env(&ctl, &["remove-port", "vm9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("vm9"), "{}", text(&out.stderr));
    let out = ctl_env(&d.path().join("none.sock"), &["ports"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("none.sock: no such file") && err.contains("use --ctl PATH or VSWITCH_CTL"),
        "{err}"
    );
}

#[test]
fn completion_scripts_and_the_man_page_are_generated() {
    let out = run_to_end(&["completions", "bash"]);
    assert!(out.status.success());
    let script = text(&out.stdout);
    assert!(
        script.contains("complete") && script.contains("set-policy"),
        "{script}"
    );
    let out = run_to_end(&["manpage"]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).starts_with(".ie"),
        "{}",
        text(&out.stdout)
    );
    let out = run_to_end(&["completions", "nosuchshell"]);
    assert_eq!(out.status.code(), Some(2));
}
