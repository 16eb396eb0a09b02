//! libvirt for real: a private libvirtd (its QEMU driver, `qemu:///session`, every directory
//! in a scratch directory; as the user `nobody` when run as root) defines and starts three TCG
//! domains with `virsh`, each with `examples/libvirt-interface.xml` pasted as it is (only the
//! socket path and the MAC changed) and the `<qemu:override>` that example documents. The
//! guests are the project's test image (kernel and initramfs from `ci/build-guest.sh`), driven
//! through their serial consoles (libvirt `<serial type='unix'>`). vm1 and vm2 on channel 100
//! reach each other through the switch; vm3 on channel 200 reaches neither.
//!
//! Skipped with one line only when libvirt is not installed; fails when it is installed and
//! cannot run.

use std::path::Path;
use std::time::{Duration, Instant};

use vswitch_tests::{
    guest_assets, libvirt_binaries, repo_root, Libvirt, OrPanic, QemuGuest, ScratchDir, Vswitch,
    VswitchPort,
};

const BOOT: Duration = Duration::from_secs(240);
const PATH_UP: Duration = Duration::from_secs(90);
const CMD: Duration = Duration::from_secs(60);

/// The example's placeholders: what an operator changes when pasting it.
const EXAMPLE_SOCKET: &str = "/run/vswitch/vm1.sock";
const EXAMPLE_MAC: &str = "52:54:00:00:01:01";

/// The MSI-X override for QEMU 7.2 under TCG, as `examples/libvirt-interface.xml` documents it.
const OVERRIDE: &str = "<qemu:override>
  <qemu:device alias='net0'>
    <qemu:frontend>
      <qemu:property name='vectors' type='unsigned' value='0'/>
    </qemu:frontend>
  </qemu:device>
</qemu:override>";

fn words(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The example, with the socket path and MAC of this guest.
fn interface_xml(socket: &Path, mac: &str) -> String {
    let example = std::fs::read_to_string(repo_root().join("examples/libvirt-interface.xml"))
        .expect("examples/libvirt-interface.xml");
    assert!(
        example.contains(EXAMPLE_SOCKET) && example.contains(EXAMPLE_MAC),
        "the example no longer has the socket path and MAC this test replaces"
    );
    assert!(
        words(&example).contains(&words(OVERRIDE)),
        "the example does not document the <qemu:override> this test uses"
    );
    let socket = socket.to_str().expect("UTF-8 socket path");
    example
        .replace(EXAMPLE_SOCKET, socket)
        .replace(EXAMPLE_MAC, mac)
}

/// One guest: its name, switch port, channel, MAC and address.
struct Vm {
    name: &'static str,
    channel: u16,
    mac: &'static str,
    ip: &'static str,
}

const VMS: [Vm; 3] = [
    Vm {
        name: "vm1",
        channel: 100,
        mac: "52:54:00:00:64:01",
        ip: "10.0.0.1",
    },
    Vm {
        name: "vm2",
        channel: 100,
        mac: "52:54:00:00:64:02",
        ip: "10.0.0.2",
    },
    Vm {
        name: "vm3",
        channel: 200,
        mac: "52:54:00:00:c8:03",
        ip: "10.0.0.3",
    },
];

/// A TCG domain booting the test image, its NIC the example's `<interface>` on `socket`, its
/// serial console the Unix socket `console` (QEMU listens).
fn domain_xml(domain: &str, vm: &Vm, files: &Path, socket: &Path, console: &Path) -> String {
    let path = |p: &Path| p.to_str().expect("UTF-8 path").to_owned();
    format!(
        "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{domain}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 no_timer_check vsw.console=harness vsw.hostname={name} vsw.ip={ip}/24 vsw.mac={mac}</cmdline>
  </os>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <serial type='unix'>
      <source mode='bind' path='{console}'/>
      <target port='0'/>
    </serial>
{iface}
    <memballoon model='none'/>
  </devices>
{OVERRIDE}
</domain>
",
        kernel = path(&files.join("vmlinux")),
        initrd = path(&files.join("initramfs.cpio.gz")),
        name = vm.name,
        ip = vm.ip,
        mac = vm.mac,
        console = path(console),
        iface = interface_xml(socket, vm.mac),
    )
}

/// Copies the guest image where the unprivileged QEMU can read it.
fn copy_assets(to: &Path) {
    let a = guest_assets().or_panic();
    for (from, name) in [(&a.kernel, "vmlinux"), (&a.initrd, "initramfs.cpio.gz")] {
        let dest = to.join(name);
        std::fs::copy(from, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
}

#[test]
fn libvirt_domains_with_the_example_interface_reach_each_other_only_on_one_channel() {
    if let Err(why) = libvirt_binaries() {
        eprintln!("skipped: {why}");
        return;
    }
    let scratch = ScratchDir::new("libvirt").or_panic();
    let dir = scratch.path();
    let lv_dir = dir.join("libvirt");
    std::fs::create_dir_all(&lv_dir).expect("libvirt dir");
    let lv = Libvirt::start(&lv_dir).or_panic();
    eprintln!(
        "private libvirtd as {}, qemu:///session in {}",
        lv.user(),
        lv_dir.display()
    );
    copy_assets(&lv.guest_dir());

    // The switch: one listen port per guest (QEMU is the vhost-user client, mode='client' in
    // the example); sockets 0666 because QEMU runs as another user.
    let sw_dir = dir.join("switch");
    std::fs::create_dir_all(&sw_dir).expect("switch dir");
    let conf = sw_dir.join("vswitch.toml");
    std::fs::write(&conf, "[switch]\nsocket_mode = \"0666\"\n").expect("config");
    let ports: Vec<VswitchPort> = VMS
        .iter()
        .map(|vm| {
            VswitchPort::listen(
                vm.name,
                sw_dir.join(format!("{}.sock", vm.name)),
                vm.channel,
            )
            .mac(vm.mac)
        })
        .collect();
    let conf_s = conf.to_str().expect("UTF-8");
    let sw = Vswitch::start_with(&sw_dir, &ports, &["--config", conf_s]).or_panic();

    let tag = std::process::id();
    let mut domains = Vec::new();
    let mut guests = Vec::new();
    for (vm, port) in VMS.iter().zip(&ports) {
        let domain = format!("vswtest-{tag}-{}", vm.name);
        let console = lv.guest_dir().join(format!("{}.console", vm.name));
        let xml = domain_xml(&domain, vm, &lv.guest_dir(), &port.socket, &console);
        domains.push(lv.start_domain(&domain, &xml).or_panic());
        eprintln!("virsh start {domain}: started");
        let start = Instant::now();
        while !console.exists() {
            assert!(start.elapsed() < CMD, "{domain}: no console socket");
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = dir.join(format!("{}.console.log", vm.name));
        guests.push(QemuGuest::attach(vm.name, &console, &log).or_panic());
    }
    for g in &mut guests {
        let t = g.wait_ready(BOOT).or_panic();
        eprintln!("{} ready after {t:.1?}", g.name());
    }
    sw.wait_connected(&["vm1", "vm2", "vm3"], PATH_UP)
        .or_panic();

    let t = guests[0].wait_ping(VMS[1].ip, PATH_UP).or_panic();
    eprintln!("vm1 -> vm2 (channel 100): reply after {t:.1?}");
    assert!(
        guests[1].ping(VMS[0].ip, 3).or_panic(),
        "vm2 does not reach vm1"
    );
    eprintln!("vm2 -> vm1 (channel 100): replies");
    for (from, to) in [(2, 0), (2, 1), (0, 2)] {
        let g = &mut guests[from];
        let ip = VMS[to].ip;
        assert!(
            !g.ping(ip, 2).or_panic(),
            "{} reached {ip} across channels",
            g.name()
        );
        eprintln!("{} -> {ip} (other channel): no reply", g.name());
    }
    // vm3 asked for vm1's and vm2's addresses and never got an answer.
    let arp = guests[2].run_ok("cat /proc/net/arp", CMD).or_panic();
    for l in arp.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert!(
            !(f.len() >= 3 && f[2] == "0x2"),
            "vm3 resolved an address across channels: {l}"
        );
    }
    let stats = sw.stats().or_panic();
    let vm3_sent = stats.port("vm3").or_panic().switch.in_frames;
    assert!(vm3_sent > 0, "vm3 sent nothing the switch saw");
    eprintln!("vm3 sent {vm3_sent} frames into the switch; its ARP table resolved nothing");
    drop(guests);
    drop(domains);
}
