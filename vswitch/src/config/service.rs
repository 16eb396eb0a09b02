//! Where the switch serves its control API and its metrics: the control socket's default,
//! environment variable and file key, and the Prometheus endpoint's address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::error::{ConfigError, Origin};
use super::raw::RawFile;

/// The control socket when neither `--ctl`, [`CTL_ENV`] nor `[switch] ctl` names one.
pub const DEFAULT_CTL: &str = "/run/vswitch/ctl.sock";

/// The environment variable naming the control socket (below `--ctl`, above `[switch] ctl`).
pub const CTL_ENV: &str = "VSWITCH_CTL";

/// The `[switch] ctl` of the configuration file at `path`, for `vswitch ctl --config FILE`.
pub fn ctl_from_file(path: &Path) -> Result<Option<PathBuf>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    let raw = RawFile::parse(path, &text)?;
    Ok(raw.switch.and_then(|s| s.ctl).map(PathBuf::from))
}

/// The Prometheus endpoint: `--metrics ADDR` (`flag`) over `[switch] metrics` (`file`).
pub fn metrics(
    flag: Option<&str>,
    file: Option<String>,
    file_at: &Origin,
) -> Result<Option<SocketAddr>, ConfigError> {
    let (text, at) = match (flag, file) {
        (Some(t), _) => (t.to_owned(), Origin::Option("--metrics")),
        (None, Some(t)) => (t, file_at.clone()),
        (None, None) => return Ok(None),
    };
    text.trim()
        .parse::<SocketAddr>()
        .map(Some)
        .map_err(|_| ConfigError::MetricsAddress {
            at,
            value: super::error::truncate(&text),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_flag_beats_file_and_bad_addresses_are_refused() {
        let at = Origin::Option("file");
        assert_eq!(metrics(None, None, &at).ok(), Some(None));
        let want: SocketAddr = "127.0.0.1:9471".parse().expect("addr");
        assert_eq!(
            metrics(None, Some("127.0.0.1:9471".into()), &at).ok(),
            Some(Some(want))
        );
        assert_eq!(
            metrics(Some("127.0.0.1:9471"), Some("nope".into()), &at).ok(),
            Some(Some(want))
        );
        for bad in ["", "9471", "localhost:9471", "127.0.0.1", "[::1]:x"] {
            let e = metrics(Some(bad), None, &at).expect_err(bad).to_string();
            assert!(e.contains("--metrics") && e.contains("IP:PORT"), "{e}");
        }
    }
}
