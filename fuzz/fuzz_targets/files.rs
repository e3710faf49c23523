//! Any bytes as the configuration file, as a file of the offline catalog and as a policy
//! test file, by `check_config_file`, `check_catalog_file` and `check_policy_test_file` of
//! tests/properties: admins write all three by hand, and bucketgate reads the configuration
//! again while it serves.
#![no_main]

#[path = "../../tests/properties/mod.rs"]
mod properties;

use std::path::Path;
use std::sync::LazyLock;

use bucketgate::policy::PolicySet;
use libfuzzer_sys::fuzz_target;

static POLICIES: LazyLock<PolicySet> =
    LazyLock::new(|| properties::example_policies(&Path::new(env!("CARGO_MANIFEST_DIR")).join("..")));

fuzz_target!(|file: &[u8]| {
    let Ok(text) = std::str::from_utf8(file) else { return };
    properties::check_config_file(text);
    properties::check_catalog_file(text);
    properties::check_policy_test_file(text, &POLICIES);
});
