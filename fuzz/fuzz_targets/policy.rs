//! Any bytes as a policy file, by `check_policy_file` of tests/properties.
#![no_main]

#[path = "../../tests/properties/mod.rs"]
mod properties;

use std::path::Path;
use std::sync::LazyLock;

use bucketgate::catalog::Catalog;
use bucketgate::config::Config;
use libfuzzer_sys::fuzz_target;

static STATE: LazyLock<(Catalog, Config, Vec<Vec<u8>>)> = LazyLock::new(|| {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (catalog, config) = properties::catalog_and_config(&repo);
    (catalog, config, properties::captured_bodies(&repo))
});

fuzz_target!(|file: &[u8]| {
    let Ok(text) = std::str::from_utf8(file) else { return };
    let (catalog, config, reviews) = &*STATE;
    properties::check_policy_file(text, catalog, config, reviews);
});
