//! Harmonization: the Withings code tables every part of the program shares.
//!
//! The code tables (meastypes, sleep states, workout categories, device models) live here and
//! only here: the simulator generates data with them and the harmonizers decode with them, so
//! the two can never disagree about what a code means.

pub mod codes;
