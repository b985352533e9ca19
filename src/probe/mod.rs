//! Probers: run every check of the fleet from one region and report observations.
//!
//! `check` does the I/O of one check (`cert` reads when its certificate expires), `threshold`
//! turns results into Up/Down (pure), and
//! `prober` schedules checks (interval with jitter) and publishes observations; `metrics`
//! counts them.

pub mod cert;
pub mod check;
pub mod metrics;
pub mod prober;
pub mod threshold;

pub use metrics::ProbeMetrics;
