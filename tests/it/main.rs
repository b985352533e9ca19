//! Integration tests: the real `vantage` binary, real HTTPS backends with generated
//! certificates, DNS over real UDP and TCP sockets on loopback.

mod architecture;
mod bad_input;
mod conformance;
mod demo;
mod deploy;
mod differential;
mod dns_rfc;
mod dnssec;
mod drill;
mod failover;
mod fleet_state;
mod hardening;
mod kubernetes;
mod multi_region;
mod ops;
mod probing;
mod references;
mod route53;
mod support;
mod xdp;
mod zone_load;
