//! Who reaches whom: every guest pings every other one from inside, and the result is printed as
//! a matrix, checked against "same channel: yes (on either host), other channel: no".

use crate::hosts::Vm;
use anyhow::{Context, Result};
use std::time::Duration;
use vswitch_tests::QemuGuest;

/// `reached[i][j]`: guest i got a ping reply from guest j. Every guest pings all the others at
/// once, and all guests run at once.
pub fn ping(guests: &mut [QemuGuest], vms: &[Vm]) -> Result<Vec<Vec<bool>>> {
    let targets: Vec<String> = vms.iter().map(|v| v.addr().to_string()).collect();
    let results: Vec<Result<Vec<bool>>> = std::thread::scope(|s| {
        let handles: Vec<_> = guests
            .iter_mut()
            .enumerate()
            .map(|(i, g)| {
                let targets = &targets;
                s.spawn(move || ping_from(g, i, targets))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("ping thread panicked")))
            })
            .collect()
    });
    results.into_iter().collect()
}

/// Guest `i` pings every target but itself; element j: a reply came back from target j.
fn ping_from(g: &mut QemuGuest, i: usize, targets: &[String]) -> Result<Vec<bool>> {
    let others: Vec<&str> = targets
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, t)| t.as_str())
        .collect();
    // Up to 3 requests within 5 s each; any reply counts.
    let cmd = format!(
        "for ip in {}; do (if ping -c 3 -w 5 -W 2 -q $ip >/dev/null 2>&1; \
         then echo \"$ip yes\"; else echo \"$ip no\"; fi) & done; wait",
        others.join(" ")
    );
    let out = g.run_ok(&cmd, Duration::from_secs(60))?;
    targets
        .iter()
        .enumerate()
        .map(|(j, t)| {
            if j == i {
                return Ok(false);
            }
            let line = out
                .lines()
                .find(|l| l.split_whitespace().next() == Some(t.as_str()))
                .with_context(|| format!("{}: no result for {t}:\n{out}", g.name()))?;
            Ok(line.ends_with(" yes"))
        })
        .collect()
}

/// Prints the matrix; returns whether it is exactly the expected one.
pub fn print(vms: &[Vm], reached: &[Vec<bool>]) -> bool {
    let label = |v: &Vm| format!("{}:{} ch{}", v.host, v.name, v.channel);
    let w = vms.iter().map(|v| label(v).len()).max().unwrap_or(8).max(8);
    println!("ping from (row) to (column): yes = replies came back; A:, B: the host");
    print!("{:w$}", "");
    for v in vms {
        print!("  {:>w$}", label(v));
    }
    println!();
    let mut wrong = Vec::new();
    for (i, a) in vms.iter().enumerate() {
        print!("{:w$}", label(a));
        for (j, b) in vms.iter().enumerate() {
            let cell = if i == j {
                "-".to_string()
            } else {
                let expected = a.channel == b.channel;
                let s = if reached[i][j] { "yes" } else { "no" };
                if reached[i][j] == expected {
                    s.to_string()
                } else {
                    wrong.push(format!(
                        "{} -> {}: {s} (expected {})",
                        a.name,
                        b.name,
                        if expected { "yes" } else { "no" }
                    ));
                    format!("{s}(!)")
                }
            };
            print!("  {cell:>w$}");
        }
        println!();
    }
    if wrong.is_empty() {
        println!(
            "matrix as expected: within a channel yes, on one host and across the uplink; \
             across channels no"
        );
        true
    } else {
        println!("UNEXPECTED: {}", wrong.join("; "));
        false
    }
}
