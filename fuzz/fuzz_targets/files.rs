//! Any bytes as the configuration file and as a file of the offline catalog, by
//! `check_config_file` and `check_catalog_file` of tests/properties: admins write both by
//! hand, and bucketgate reads the configuration again while it serves.
#![no_main]

#[path = "../../tests/properties/mod.rs"]
mod properties;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|file: &[u8]| {
    let Ok(text) = std::str::from_utf8(file) else { return };
    properties::check_config_file(text);
    properties::check_catalog_file(text);
});
