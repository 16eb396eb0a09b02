//! Fuzz harnesses: each target module decodes one fuzz target's input and checks its
//! properties. The cargo-fuzz crate in `targets/` calls them from libFuzzer; `tests/corpus.rs`
//! replays the committed corpora through them as ordinary tests. See docs/fuzzing.md.

pub mod config_file;
pub mod ctl_request;
pub mod desc;
pub mod frame;
pub mod input;
pub mod vhost_user;

// The `vswitch` binary's configuration and control-protocol modules, compiled from their
// source files as the binary compiles them: they are not part of the vswitch library, and the
// paths they use (`crate::spec`, `crate::Switch`, `crate::config`, `super::proto`) resolve here
// as they do in the binary's main.rs.
use vswitch::spec;
use vswitch::Switch;

#[allow(dead_code, unused_imports)]
#[path = "../../../vswitch/src/config/mod.rs"]
mod config;
#[allow(dead_code, unused_imports)]
#[path = "../../../vswitch/src/ctl/handler.rs"]
mod handler;
#[allow(dead_code, unused_imports)]
#[path = "../../../vswitch/src/ctl/proto.rs"]
mod proto;
#[allow(dead_code, unused_imports)]
#[path = "../../../vswitch/src/state/mod.rs"]
mod state;
