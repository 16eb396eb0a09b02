//! `poll_cores`: the CPUs busy-poll threads are pinned to, checked against the CPUs this
//! process may run on.

use super::error::{truncate, ConfigError, Origin};
use super::raw::RawNumber;

/// The CPUs this process may run on, ascending.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data, zeroed is a valid empty set; sched_getaffinity writes
    // at most `size_of::<cpu_set_t>()` bytes into it.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        set
    };
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: every index is below the set's size in bits.
    (0..max)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// `0-3,6` style text for messages.
fn ranges(cpus: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

/// Validates a list of CPUs: each one available to this process, none twice.
pub fn poll_cores(raw: &[RawNumber], at: &Origin) -> Result<Vec<usize>, ConfigError> {
    let allowed = allowed_cpus();
    let mut out = Vec::with_capacity(raw.len());
    for n in raw {
        let bad = |why: String| ConfigError::PollCores {
            at: at.clone(),
            detail: format!("CPU {} {why}", truncate(&n.to_string())),
        };
        let cpu = n
            .in_range(0..=u64::from(u16::MAX))
            .and_then(|c| usize::try_from(c).ok())
            .ok_or_else(|| bad("is not a CPU number".into()))?;
        if !allowed.contains(&cpu) {
            return Err(bad(format!(
                "is not available to this process (available: {})",
                ranges(&allowed)
            )));
        }
        if out.contains(&cpu) {
            return Err(bad("is listed twice".into()));
        }
        out.push(cpu);
    }
    Ok(out)
}

/// Parses `--poll-cores 2,3` text. An empty item (`1,,2`, a trailing comma) is refused, not
/// skipped: it is a typo whose intent is unknown. The empty text is the empty list.
pub fn parse_list(text: &str, at: &Origin) -> Result<Vec<RawNumber>, ConfigError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .enumerate()
        .map(|(i, s)| match s.trim() {
            "" => Err(ConfigError::PollCores {
                at: at.clone(),
                detail: format!("item #{} of {:?} is empty", i + 1, truncate(text)),
            }),
            s => Ok(RawNumber::Text(s.to_owned())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_compress() {
        assert_eq!(ranges(&[0, 1, 2, 3, 6, 8, 9]), "0-3,6,8-9");
        assert_eq!(ranges(&[]), "");
    }

    #[test]
    fn checks_cpus() {
        let at = Origin::Option("--poll-cores");
        let allowed = allowed_cpus();
        let first = allowed.first().copied().unwrap_or(0);
        assert_eq!(
            poll_cores(
                &parse_list(&first.to_string(), &at).expect("a valid list"),
                &at
            )
            .ok(),
            Some(vec![first])
        );
        let twice = parse_list(&format!("{first},{first}"), &at).expect("a valid list");
        let e = poll_cores(&twice, &at).expect_err("twice");
        assert!(e.to_string().contains("twice"), "{e}");
        let e =
            poll_cores(&parse_list("4000", &at).expect("a valid list"), &at).expect_err("absent");
        assert!(e.to_string().contains("not available"), "{e}");
        let e = poll_cores(&parse_list("x", &at).expect("a valid list"), &at).expect_err("text");
        assert!(e.to_string().contains("not a CPU number"), "{e}");
        assert_eq!(parse_list("", &at).ok(), Some(vec![]));
        let e = parse_list("1,,2,-,a", &at).expect_err("empty item");
        assert!(e.to_string().contains("item #2"), "{e}");
    }
}
