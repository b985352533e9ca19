//! Fuzz target: any bytes as a zone file. Loading must never panic: it gives a zone or an
//! error naming the file and line.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The directory holds nothing to include: `$INCLUDE` lines fail cleanly.
    let path = Path::new("/nonexistent-zones/example.com.zone");
    if let Err(e) = vantage::dns::zones::parse_zone_bytes(path, data) {
        assert!(e.to_string().starts_with("/nonexistent-zones/example.com.zone"), "{e}");
    }
});
