//! Fuzz target: any packet through the DNS request path (decode, catalog, zone handlers,
//! managed answers, encode). It must never panic, and any reply must be a valid message.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vantage::dns::harness::Harness;

fn harness() -> &'static (tokio::runtime::Runtime, Harness) {
    static H: OnceLock<(tokio::runtime::Runtime, Harness)> = OnceLock::new();
    H.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        (runtime, Harness::new().expect("harness"))
    })
}

fuzz_target!(|data: &[u8]| {
    let (runtime, harness) = harness();
    if let Some(reply) = runtime.block_on(harness.handle(data)) {
        assert!(hickory_proto::op::Message::from_vec(&reply).is_ok(), "unparsable reply");
    }
});
