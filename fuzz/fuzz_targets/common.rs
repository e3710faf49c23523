//! What both targets read: the captured reviews and the cluster objects they refer to.

#![allow(dead_code)] // each target takes its part

use std::path::{Path, PathBuf};

use bucketgate::catalog::Catalog;
use bucketgate::config::Config;

pub fn fixtures() -> PathBuf {
    std::env::var_os("BUCKETGATE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
}

pub fn catalog_and_config() -> (Catalog, Config) {
    let catalog = Catalog::load_dir(&fixtures().join("catalog")).expect("the fixture catalog loads");
    (catalog, Config::default().with_provisioners(["rook-ceph.ceph.rook.io/bucket".to_string()]))
}

/// The captured AdmissionReview bodies.
pub fn reviews() -> Vec<Vec<u8>> {
    let mut files: Vec<_> = std::fs::read_dir(fixtures().join("admission-reviews"))
        .expect("the captured reviews are there: set BUCKETGATE_FIXTURES")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files.iter().map(|path| std::fs::read(path).unwrap()).collect()
}
