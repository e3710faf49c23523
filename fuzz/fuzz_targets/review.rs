//! Any bytes as a review body, answered by both webhooks with the fixture catalog and the
//! example policies: the properties of tests/properties hold.
#![no_main]

mod common;
#[path = "../../tests/properties/mod.rs"]
mod properties;

use std::path::Path;
use std::sync::LazyLock;

use bucketgate::admission::Context;
use bucketgate::catalog::Catalog;
use bucketgate::config::Config;
use bucketgate::policy::{PolicySet, load};
use libfuzzer_sys::fuzz_target;

static STATE: LazyLock<(Catalog, Config, PolicySet)> = LazyLock::new(|| {
    let (catalog, config) = common::catalog_and_config();
    let policies = load::load(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")]).unwrap();
    (catalog, config, policies)
});

fuzz_target!(|body: &[u8]| {
    let (catalog, config, policies) = &*STATE;
    properties::check(body, &Context { catalog, config, policies });
});
