//! Logical channels.
