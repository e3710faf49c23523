//! Any bytes as a review body, answered by both webhooks with the fixture catalog and the
//! example policies: the properties of tests/properties hold.
#![no_main]

#[path = "../../tests/properties/mod.rs"]
mod properties;

use std::path::Path;
use std::sync::LazyLock;

use bucketgate::admission::Context;
use bucketgate::catalog::Catalog;
use bucketgate::config::Config;
use bucketgate::policy::PolicySet;
use libfuzzer_sys::fuzz_target;

static STATE: LazyLock<(Catalog, Config, PolicySet)> = LazyLock::new(|| {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (catalog, config) = properties::catalog_and_config(&repo);
    (catalog, config, properties::example_policies(&repo))
});

fuzz_target!(|body: &[u8]| {
    let (catalog, config, policies) = &*STATE;
    properties::check(body, &Context { catalog, config, policies });
});
