//! Test guest.
