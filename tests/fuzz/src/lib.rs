//! Fuzz harnesses: each target module decodes one fuzz target's input and checks its
//! properties. The cargo-fuzz crate in `targets/` calls them from libFuzzer; `tests/corpus.rs`
//! replays the committed corpora through them as ordinary tests. See docs/fuzzing.md.

pub mod config_file;
pub mod ctl_request;
pub mod desc;
pub mod frame;
pub mod input;
pub mod vhost_user;
