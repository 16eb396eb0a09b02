//! Compiles the dot1ad uplink's XDP program (`bpf/xsk_redirect.c`) with clang when clang is
//! here (`CLANG` names another one). Without it the build still succeeds: the switch then has
//! no XDP program, and a dot1ad uplink says so in its log line and runs over AF_PACKET.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "bpf/xsk_redirect.c";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rustc-check-cfg=cfg(vswitch_xdp_prog)");
    let Some(out) = env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    let obj = out.join("xsk_redirect.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let built = Command::new(&clang)
        .args([
            "-target", "bpf", "-O2", "-g", "-Wall", "-Werror", "-c", SOURCE, "-o",
        ])
        .arg(&obj)
        .output();
    match built {
        Ok(o) if o.status.success() => println!("cargo:rustc-cfg=vswitch_xdp_prog"),
        Ok(o) => println!(
            "cargo:warning=the XDP program did not compile ({clang}: {}); dot1ad uplinks will \
             use AF_PACKET",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("failed")
        ),
        Err(e) => println!(
            "cargo:warning={clang} not found ({e}): no XDP program in this build, dot1ad \
             uplinks will use AF_PACKET (install clang, e.g. ci/install-deps.sh, and rebuild \
             for AF_XDP)"
        ),
    }
}
