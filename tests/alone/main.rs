//! Integration tests that must run alone: they saturate the machine on purpose. Cargo runs
//! test binaries one after another, so nothing else runs beside them.

mod cpu_overload;
#[allow(dead_code)]
#[path = "../it/support.rs"]
mod support;
