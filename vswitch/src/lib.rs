//! Switch core.
