//! The properties of tests/properties on every captured review, the example policies, the
//! shipped configuration and catalog files, and every input in `fuzz/regressions`: what the
//! fuzzer found a failure with, kept once fixed.

mod properties;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use bucketgate::admission::Context;
use bucketgate::policy::load;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The inputs kept in `fuzz/regressions/TARGET`, each named for what it found.
fn kept(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(REPO).join("fuzz/regressions").join(target);
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| !path.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect()
}

/// Each file's name, for a failure's message, and its bytes.
fn read(files: Vec<PathBuf>) -> Vec<(String, Vec<u8>)> {
    files.into_iter().map(|file| (file.display().to_string(), std::fs::read(&file).unwrap())).collect()
}

/// How many of `inputs` `check` says yes to; a property that fails says which input.
fn passing(inputs: &[(String, Vec<u8>)], check: impl Fn(&[u8]) -> bool) -> usize {
    let holds = |(shown, bytes): &&(String, Vec<u8>)| match std::panic::catch_unwind(AssertUnwindSafe(|| check(bytes)))
    {
        Ok(yes) => yes,
        Err(panic) => std::panic::resume_unwind(Box::new(format!("{shown}: {panic:?}"))),
    };
    inputs.iter().filter(holds).count()
}

/// The text checks take only text: the fuzz targets skip bytes that are not UTF-8.
fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("UTF-8")
}

#[test]
fn every_captured_and_kept_review_answers_by_the_properties() {
    let repo = Path::new(REPO);
    let ((catalog, config), policies) = (properties::catalog_and_config(repo), properties::example_policies(repo));
    let ctx = Context { catalog: &catalog, config: &config, policies: &policies };
    let mut files: Vec<_> = properties::captured(repo).into_iter().chain(kept("review")).collect();
    files.sort();
    assert!(files.len() >= 30, "{files:?}");
    let mutated = passing(&read(files), |body| properties::check(body, &ctx));
    // The patch and reinvocation checks ran on real patches, not only on empty answers.
    assert!(mutated >= 3, "{mutated} reviews mutated");
}

#[test]
fn every_example_and_kept_policy_file_loads_or_is_refused_and_judges_by_the_properties() {
    let repo = Path::new(REPO);
    let (catalog, config) = properties::catalog_and_config(repo);
    let reviews = properties::captured_bodies(repo);
    let mut files: Vec<_> = std::fs::read_dir(repo.join("policies"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| !load::is_test_file(path))
        .chain(kept("policy"))
        .collect();
    files.sort();
    let loaded = passing(&read(files), |file| properties::check_policy_file(text(file), &catalog, &config, &reviews));
    assert!(loaded >= 6, "{loaded} policy files loaded");
}

/// The configurations in a file, as `bucketgate config check` reads it: the file, or the
/// `config.yaml` of each ConfigMap in a manifest, as the pod sees it mounted.
fn configurations(file: &Path) -> Vec<(String, Vec<u8>)> {
    let text = std::fs::read_to_string(file).unwrap();
    let texts = bucketgate::config::texts_in(&text, &file.display().to_string()).unwrap();
    texts.into_iter().map(|(shown, text)| (shown, text.into_bytes())).collect()
}

#[test]
fn the_shipped_and_kept_configuration_and_catalog_files_read_by_the_properties() {
    let repo = Path::new(REPO);
    let mut configs = configurations(&repo.join("manifests/base/config.yaml"));
    configs.extend(configurations(&repo.join("manifests/examples/dev/bucketgate-config.yaml")));
    configs.extend(read(kept("files")));
    let catalogs = std::fs::read_dir(repo.join("manifests/examples"))
        .unwrap()
        .chain(std::fs::read_dir(properties::fixtures(repo).join("catalog")).unwrap())
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file());
    let mut files: Vec<_> = catalogs.chain(kept("files")).collect();
    files.sort();
    let parsed = passing(&configs, |file| properties::check_config_file(text(file)));
    let made = passing(&read(files), |file| properties::check_catalog_file(text(file)));
    // The checks ran on files that parse, not only on refusals.
    assert!(parsed >= 2 && made >= 5, "{parsed} configurations parsed, {made} catalogs made");
}

#[test]
fn the_example_and_kept_policy_test_files_run_by_the_properties() {
    let repo = Path::new(REPO);
    let policies = properties::example_policies(repo);
    let examples = std::fs::read_dir(repo.join("policies")).unwrap().map(|entry| entry.unwrap().path());
    let mut files: Vec<_> = examples.filter(|path| load::is_test_file(path)).chain(kept("files")).collect();
    files.sort();
    let ran = passing(&read(files), |file| properties::check_policy_test_file(text(file), &policies));
    assert!(ran >= 7, "{ran} test files ran");
}
