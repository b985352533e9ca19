//! Observations from probers to aggregators.
//!
//! In-process probers write to the `board` directly. Remote probers (`vantage probe`) serve
//! their board as a signed report (`serve`), which aggregators pull (`pull`) and write to their
//! own board. Reports and requests are authenticated with the fleet secret (`auth`); the wire
//! format is in `wire`; `metrics` counts pulls and refusals. The other way, `asks` carries
//! the aggregator's "check it now" requests to probers.

pub mod asks;
pub mod auth;
pub mod board;
pub mod metrics;
pub mod pull;
pub mod serve;
pub mod wire;

pub use board::ObservationBoard;
pub use metrics::ExchangeMetrics;
