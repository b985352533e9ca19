//! What a serving process keeps in its state directory (`admin.state_dir`, or
//! `route53.state_dir`), read at start and written as it changes: operator overrides and their
//! audit log (`overrides`), the last drill result per record (`drills`), the last verdicts
//! (`verdicts`). Loading never stops a server (`file`); `metrics` exports them.

pub mod drills;
pub mod etcd;
pub mod file;
pub mod fleet;
pub mod leader;
pub mod members;
pub mod metrics;
pub mod overrides;
pub mod store;
pub mod verdicts;

pub use metrics::StateMetrics;
