//! Port capture (`ctl capture`) with in-process guests over real vhost-user sockets: the pcap
//! holds exactly the frames of the port, each with its channel as an 802.1ad S-tag, and
//! `tcpdump -r -e` reads it.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::Command;

use common::*;
use pcap_file::pcap::PcapReader;
use vswitch::capture::{CaptureOptions, Direction, DEFAULT_SNAPLEN};

fn three_vms() -> Net {
    Net::new(&[
        vm("vm1", 100, Some(mac(1))),
        vm("vm2", 100, Some(mac(2))),
        vm("vm3", 200, Some(mac(3))),
    ])
}

fn opts(file: &Path, direction: Direction, count: Option<u64>) -> CaptureOptions {
    CaptureOptions {
        file: file.to_path_buf(),
        direction,
        count,
        snaplen: DEFAULT_SNAPLEN,
    }
}

/// The frames of a pcap file.
fn read_pcap(path: &Path) -> Vec<(u32, Vec<u8>)> {
    let mut r = PcapReader::new(File::open(path).expect("pcap exists")).expect("pcap header");
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.expect("pcap record");
        out.push((p.orig_len, p.data.into_owned()));
    }
    out
}

/// `frame` with an 802.1ad S-tag for `vid` after its MAC addresses.
fn tagged(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut t = frame[..12].to_vec();
    t.extend_from_slice(&[0x88, 0xa8]);
    t.extend_from_slice(&vid.to_be_bytes());
    t.extend_from_slice(&frame[12..]);
    t
}

#[test]
fn a_capture_holds_the_ports_frames_with_their_channel() {
    let net = three_vms();
    let mut g1 = net.guest("vm1", mac(1));
    let mut g2 = net.guest("vm2", mac(2));
    let mut g3 = net.guest("vm3", mac(3));
    let file = net.dir.path().join("vm2.pcap");
    net.sw
        .capture_start("vm2", &opts(&file, Direction::Both, None))
        .expect("capture starts");
    let to2: Vec<Vec<u8>> = (0..5).map(|i| eth(mac(2), mac(1), i)).collect();
    for f in &to2 {
        g1.send(f).expect("send");
    }
    assert_eq!(drain(&mut g2).len(), 5);
    let from2 = eth(mac(1), mac(2), 100);
    g2.send(&from2).expect("send");
    assert_eq!(drain(&mut g1).len(), 1);
    // Traffic of another port and channel is not in vm2's capture.
    g3.send(&eth(BCAST, mac(3), 200)).expect("send");
    assert!(g3.wait_tx_used(1, std::time::Duration::from_secs(5)));
    let listed = net.sw.captures();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].port, "vm2");
    let status = net.sw.capture_stop("vm2").expect("capture stops");
    assert_eq!((status.captured, status.not_captured), (6, 0));

    let got = read_pcap(&file);
    let mut want: Vec<Vec<u8>> = to2.iter().map(|f| tagged(f, 100)).collect();
    want.push(tagged(&from2, 100));
    let frames: Vec<Vec<u8>> = got.iter().map(|(_, d)| d.clone()).collect();
    assert_eq!(
        frames, want,
        "every frame of vm2, S-tagged with channel 100"
    );
    assert!(got.iter().all(|(len, d)| *len as usize == d.len()));

    // tcpdump reads it and shows the channel.
    match Command::new("tcpdump")
        .args(["-r"])
        .arg(&file)
        .args(["-e", "-nn"])
        .output()
    {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            eprintln!("{text}");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            // One header line per frame (payload dumps follow on indented lines).
            let heads: Vec<&str> = text
                .lines()
                .filter(|l| !l.starts_with(char::is_whitespace))
                .collect();
            assert_eq!(heads.len(), 6, "{text}");
            assert!(
                heads
                    .iter()
                    .all(|l| l.contains("802.1Q-QinQ (0x88a8)") && l.contains("vlan 100")),
                "{text}"
            );
        }
        Err(e) => eprintln!("tcpdump not run ({e}): the pcap was checked with pcap-file only"),
    }
}

#[test]
fn direction_count_and_refusals() {
    let net = three_vms();
    let mut g1 = net.guest("vm1", mac(1));
    let mut g2 = net.guest("vm2", mac(2));
    let rx_only = net.dir.path().join("rx.pcap");
    net.sw
        .capture_start("vm1", &opts(&rx_only, Direction::Rx, Some(3)))
        .expect("capture starts");
    // One capture per port; an existing file is never overwritten; a symlink is not followed.
    assert!(net
        .sw
        .capture_start(
            "vm1",
            &opts(&net.dir.path().join("x.pcap"), Direction::Both, None)
        )
        .is_err());
    let taken = net.dir.path().join("taken.pcap");
    std::fs::write(&taken, b"keep").expect("write");
    let err = net
        .sw
        .capture_start("vm2", &opts(&taken, Direction::Both, None))
        .expect_err("existing file refused")
        .to_string();
    assert!(err.contains("exists"), "{err}");
    assert_eq!(std::fs::read(&taken).expect("read"), b"keep");
    let link = net.dir.path().join("link.pcap");
    std::os::unix::fs::symlink(net.dir.path().join("target.pcap"), &link).expect("symlink");
    assert!(net
        .sw
        .capture_start("vm2", &opts(&link, Direction::Both, None))
        .is_err());
    assert!(!net.dir.path().join("target.pcap").exists());
    assert!(net
        .sw
        .capture_start(
            "nope",
            &opts(&net.dir.path().join("n.pcap"), Direction::Both, None)
        )
        .is_err());
    assert!(net.sw.capture_stop("vm2").is_err(), "nothing to stop");

    // vm1 sends 10 frames and receives 2: the capture keeps the first 3 it sent.
    for i in 0..10 {
        g1.send(&eth(mac(2), mac(1), i)).expect("send");
    }
    assert_eq!(drain(&mut g2).len(), 10);
    for i in 0..2 {
        g2.send(&eth(mac(1), mac(2), 50 + i)).expect("send");
    }
    assert_eq!(drain(&mut g1).len(), 2);
    let status = net.sw.capture_stop("vm1").expect("stop");
    assert_eq!(status.captured, 3);
    let got = read_pcap(&rx_only);
    let want: Vec<Vec<u8>> = (0..3)
        .map(|i| tagged(&eth(mac(2), mac(1), i), 100))
        .collect();
    assert_eq!(got.into_iter().map(|(_, d)| d).collect::<Vec<_>>(), want);
}

#[test]
fn a_snap_length_cuts_frames_and_keeps_their_length() {
    let net = three_vms();
    let mut g1 = net.guest("vm1", mac(1));
    let mut g2 = net.guest("vm2", mac(2));
    let file = net.dir.path().join("snap.pcap");
    let mut o = opts(&file, Direction::Tx, None);
    o.snaplen = 64;
    net.sw.capture_start("vm2", &o).expect("start");
    let big = vswitch_testguest::EthFrame::new(mac(2), mac(1), 0x88b5, &[9u8; 1000]).build();
    g1.send(&big).expect("send");
    assert_eq!(drain(&mut g2).len(), 1);
    net.sw.capture_stop("vm2").expect("stop");
    let got = read_pcap(&file);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].0 as usize,
        big.len() + 4,
        "original length, S-tag included"
    );
    assert_eq!(got[0].1, tagged(&big, 100)[..64].to_vec());
}
