//! `bucketgate policy test`: runs the `*.test.yaml` suites beside the policies. Each case
//! goes through the whole admission chain as the API server runs it: the mutating webhook,
//! its patch applied, then the validating webhook, with the built-in rules and the policies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use regex::Regex;
use serde::Deserialize;
use serde_json::{Value, json};

use super::PolicySet;
use super::load::{self, LoadError};
use super::spec::{API_VERSION, Metadata};
use crate::admission::{self, Chained, Context};
use crate::catalog::Catalog;
use crate::config::Config;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SuiteDocument {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    /// Provisioners the built-in rules treat as served.
    #[serde(default)]
    pub provisioners: Vec<String>,
    /// BucketClasses, BucketContents, Namespaces (with labels) and Buckets.
    #[serde(default)]
    pub catalog: Vec<Value>,
    pub cases: Vec<CaseSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CaseSpec {
    pub name: String,
    /// CREATE (default), UPDATE or DELETE.
    #[serde(default)]
    pub operation: Option<String>,
    /// Defaults to the object's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub user: Option<UserSpec>,
    #[serde(default)]
    pub object: Option<Value>,
    #[serde(default)]
    pub old_object: Option<Value>,
    pub expect: ExpectSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExpectSpec {
    pub allowed: bool,
    /// A regular expression the denial message must match.
    #[serde(default)]
    pub message: Option<String>,
    /// Regular expressions, each matching one of the warnings; no other warnings allowed.
    #[serde(default)]
    pub warnings: Option<Vec<String>>,
    /// Audit annotation key (the policy's name) to a regular expression for its value.
    #[serde(default)]
    pub audit: BTreeMap<String, String>,
    /// Fields the object must have after mutation (a subset of the patched object).
    #[serde(default)]
    pub patched: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub file: PathBuf,
    pub suite: String,
    pub case: String,
    /// Why the case failed; `None` when it passed.
    pub failure: Option<String>,
    pub duration: Duration,
}

/// Loads the policies in `dir` and runs every suite there.
pub fn run_dir(dir: &Path) -> Result<Vec<CaseResult>, Vec<LoadError>> {
    let dirs = [dir.to_path_buf()];
    let policies = load::load(&dirs)?;
    let files = load::read_files(&dirs, true)?;
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for (path, text) in files {
        match run_file(&path, &text, &policies) {
            Ok(file_results) => results.extend(file_results),
            Err(error) => errors.push(error),
        }
    }
    if errors.is_empty() { Ok(results) } else { Err(errors) }
}

/// Runs every suite of one test file, `text` read from `path`, against `policies`: a
/// result for each case, or why the file is not a test file.
pub fn run_file(path: &Path, text: &str, policies: &PolicySet) -> Result<Vec<CaseResult>, LoadError> {
    let suites = parse_suites(path, text)?;
    Ok(suites.iter().flat_map(|suite| run_suite(path, suite, policies)).collect())
}

pub fn parse_suites(path: &Path, text: &str) -> Result<Vec<SuiteDocument>, LoadError> {
    let suites: Vec<SuiteDocument> = serde_saphyr::from_multiple(text).map_err(|e| LoadError {
        file: path.to_path_buf(),
        line: e.location().map(|l| l.line() as usize),
        message: load::first_line(&e.to_string()),
    })?;
    for suite in &suites {
        if suite.api_version != API_VERSION || suite.kind != "BucketPolicyTest" {
            return Err(LoadError {
                file: path.to_path_buf(),
                line: None,
                message: format!(
                    "expected apiVersion {API_VERSION} and kind BucketPolicyTest, got {} {}",
                    suite.api_version, suite.kind
                ),
            });
        }
    }
    Ok(suites)
}

fn run_suite(path: &Path, suite: &SuiteDocument, policies: &PolicySet) -> Vec<CaseResult> {
    let catalog = Catalog::from_documents(suite.catalog.iter().map(|d| (path.to_path_buf(), d.clone())));
    let config = Config::default().with_provisioners(suite.provisioners.iter().cloned());
    suite
        .cases
        .iter()
        .map(|case| {
            let started = Instant::now();
            let failure = match &catalog {
                Ok(catalog) => {
                    let ctx = Context { catalog, config: &config, policies };
                    run_case(case, &ctx).err()
                }
                Err(error) => Some(format!("the suite's catalog does not load: {error}")),
            };
            CaseResult {
                file: path.to_path_buf(),
                suite: suite.metadata.name.clone(),
                case: case.name.clone(),
                failure,
                duration: started.elapsed(),
            }
        })
        .collect()
}

fn run_case(case: &CaseSpec, ctx: &Context) -> Result<(), String> {
    let operation = case.operation.as_deref().unwrap_or("CREATE");
    let subject = case.object.as_ref().or(case.old_object.as_ref()).ok_or("a case needs object or oldObject")?;
    let name = subject["kind"].as_str().ok_or("the object has no kind")?;
    let kind = crate::admission::Kind::named(name)
        .ok_or_else(|| format!("kind {name:?} is not one of Bucket, BucketClass, BucketContent"))?;
    let namespace = case
        .namespace
        .clone()
        .or_else(|| subject.pointer("/metadata/namespace").and_then(Value::as_str).map(String::from));
    let user = case
        .user
        .as_ref()
        .map(|u| json!({"username": u.username, "groups": u.groups}))
        .unwrap_or(json!({"username": "policy-test"}));
    let object = if operation == "DELETE" { None } else { case.object.clone() };
    let outcome = admission::chain(ctx, kind, operation, namespace.as_deref(), user, object, case.old_object.clone())
        .map_err(|e| format!("the case: {e}"))?;
    check(&case.expect, &outcome)
}

fn check(expect: &ExpectSpec, outcome: &Chained) -> Result<(), String> {
    let mut problems = Vec::new();
    if expect.allowed != outcome.allowed {
        problems.push(if outcome.allowed {
            "expected a denial, but the request was allowed".to_string()
        } else {
            format!("expected the request to be allowed, but it was denied: {}", outcome.message)
        });
    }
    if let Some(pattern) = &expect.message {
        let regex = Regex::new(pattern).map_err(|e| format!("expect.message is not a regular expression: {e}"))?;
        if !regex.is_match(&outcome.message) {
            problems.push(format!("the message {:?} does not match {pattern:?}", outcome.message));
        }
    }
    if let Some(patterns) = &expect.warnings {
        let mut unmatched: Vec<&String> = outcome.warnings.iter().collect();
        for pattern in patterns {
            let regex = Regex::new(pattern).map_err(|e| format!("expect.warnings: {e}"))?;
            match unmatched.iter().position(|w| regex.is_match(w)) {
                Some(i) => {
                    unmatched.remove(i);
                }
                None => problems.push(format!("no warning matches {pattern:?} (warnings: {:?})", outcome.warnings)),
            }
        }
        if !unmatched.is_empty() {
            problems.push(format!("unexpected warnings: {unmatched:?}"));
        }
    }
    for (key, pattern) in &expect.audit {
        let regex = Regex::new(pattern).map_err(|e| format!("expect.audit: {e}"))?;
        match outcome.audit.get(key) {
            Some(value) if regex.is_match(value) => {}
            Some(value) => problems.push(format!("audit annotation {key}={value:?} does not match {pattern:?}")),
            None => problems.push(format!("no audit annotation {key} (have {:?})", outcome.audit)),
        }
    }
    if let Some(expected) = &expect.patched {
        match &outcome.patched {
            Some(actual) => {
                if let Err(at) = subset(expected, actual, "") {
                    problems.push(format!("the patched object differs at {at}"));
                }
            }
            None => problems.push("expected a patched object, but the mutating webhook did not admit one".into()),
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

/// Every field of `expected` is in `actual` with the same value; `Err` names the first that is not.
fn subset(expected: &Value, actual: &Value, at: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, value) in e {
                let here = format!("{at}.{key}");
                match a.get(key) {
                    Some(actual) => subset(value, actual, &here)?,
                    None => return Err(format!("{here} (absent)")),
                }
            }
            Ok(())
        }
        (e, a) if e == a => Ok(()),
        (e, a) => Err(format!("{} (expected {e}, got {a})", if at.is_empty() { "." } else { at })),
    }
}

/// A table for people: one line a case, then the totals.
pub fn table(results: &[CaseResult]) -> String {
    let width = results.iter().map(|r| r.suite.len() + r.case.len() + 3).max().unwrap_or(10).max(10);
    let mut out = String::new();
    for result in results {
        let name = format!("{} / {}", result.suite, result.case);
        match &result.failure {
            None => out.push_str(&format!("PASS  {name}\n")),
            Some(failure) => out.push_str(&format!("FAIL  {name:<width$}  {failure}\n")),
        }
    }
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    out.push_str(&format!("policy tests: {} passed, {failed} failed\n", results.len() - failed));
    out
}

/// JUnit XML for CI systems: a test suite per suite, a test case per case.
pub fn junit(results: &[CaseResult]) -> Result<String, String> {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut report = Report::new("bucketgate policy test");
    let mut suites: BTreeMap<(String, String), Vec<&CaseResult>> = BTreeMap::new();
    for result in results {
        suites.entry((result.file.display().to_string(), result.suite.clone())).or_default().push(result);
    }
    for ((file, name), cases) in suites {
        let mut suite = TestSuite::new(name.clone());
        suite.add_property(quick_junit::Property::new("file", file));
        for case in cases {
            let status = match &case.failure {
                None => TestCaseStatus::success(),
                Some(failure) => {
                    let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    status.set_message(failure.clone());
                    status
                }
            };
            let mut test = TestCase::new(case.case.clone(), status);
            test.set_classname(name.clone());
            test.set_time(case.duration);
            suite.add_test_case(test);
        }
        report.add_test_suite(suite);
    }
    report.to_string().map_err(|e| e.to_string())
}
