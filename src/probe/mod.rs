//! Probers: run every check of the fleet from one region and report observations.
//!
//! `check` does the I/O of one check (`cert` reads when its certificate expires, `verify`
//! remembers the chains it verified, never past their validity), `threshold`
//! turns results into Up/Down (pure), and
//! `prober` runs checks when `schedule` says (regions take turns on a shared grid) and
//! publishes observations, within the
//! budget of checks in flight that `load` keeps (and whose late starts make a prober
//! overloaded); `metrics` counts them.

pub mod cert;
pub mod check;
pub mod load;
pub mod metrics;
pub mod prober;
pub mod schedule;
pub mod threshold;
pub mod verify;

pub use metrics::ProbeMetrics;
