//! Reading policy directories. Policy files are `*.yaml` and `*.yml`; test suites sit beside
//! them as `*.test.yaml`. Entries whose names start with `.` are skipped, which is what a
//! ConfigMap mount needs: its files are links into a `..data` directory swapped on update.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::spec::PolicyDocument;
use super::{Policy, PolicySet};

/// A problem in a policy file, located as precisely as the parser allows.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LoadError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

fn error(file: &Path, line: Option<usize>, message: impl Into<String>) -> LoadError {
    LoadError { file: file.to_path_buf(), line, message: message.into() }
}

pub fn is_test_file(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".test.yaml") || n.ends_with(".test.yml"))
}

/// The YAML files below `dirs`, sorted, with their contents: policy files when `tests` is
/// false, test suites when it is true.
pub fn read_files(dirs: &[PathBuf], tests: bool) -> Result<Vec<(PathBuf, String)>, Vec<LoadError>> {
    let mut paths = Vec::new();
    let mut errors = Vec::new();
    for dir in dirs {
        collect(dir, &mut paths, &mut errors);
    }
    paths.retain(|p| is_test_file(p) == tests);
    paths.sort();
    let mut files = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => files.push((path, text)),
            Err(e) => errors.push(error(&path, None, format!("cannot read: {e}"))),
        }
    }
    if errors.is_empty() { Ok(files) } else { Err(errors) }
}

fn collect(dir: &Path, paths: &mut Vec<PathBuf>, errors: &mut Vec<LoadError>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return errors.push(error(dir, None, format!("cannot read directory: {e}"))),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(&path, paths, errors);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            paths.push(path);
        }
    }
}

/// Compiles every policy in `files`. All or nothing: any error means no set, so a broken
/// file never replaces the policies in force.
pub fn compile(files: &[(PathBuf, String)]) -> Result<PolicySet, Vec<LoadError>> {
    let mut policies: Vec<Policy> = Vec::new();
    let mut errors = Vec::new();
    for (path, text) in files {
        let documents: Vec<serde_saphyr::Spanned<PolicyDocument>> = match serde_saphyr::from_multiple(text) {
            Ok(documents) => documents,
            Err(e) => {
                let line = e.location().map(|l| l.line() as usize);
                errors.push(error(path, line, first_line(&e.to_string())));
                continue;
            }
        };
        for document in documents {
            let line = document.referenced.line() as usize;
            match Policy::compile(document.value, path.clone(), line) {
                Ok(policy) => {
                    if let Some(other) = policies.iter().find(|p| p.name == policy.name) {
                        errors.push(error(
                            path,
                            Some(line),
                            format!(
                                "policy {:?} is also defined at {}:{}",
                                policy.name,
                                other.source.display(),
                                other.line
                            ),
                        ));
                    } else {
                        policies.push(policy);
                    }
                }
                Err(message) => errors.push(error(path, Some(line), message)),
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(PolicySet { policies, loaded_at: SystemTime::now() })
}

/// Reads and compiles `dirs`.
pub fn load(dirs: &[PathBuf]) -> Result<PolicySet, Vec<LoadError>> {
    compile(&read_files(dirs, false)?)
}

/// serde-saphyr writes `error: line L column C: message` and a source snippet; callers show
/// the file and line themselves, so only the message is kept.
pub(crate) fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default().trim_start_matches("error: ");
    match line.split_once(": ") {
        Some((location, rest)) if location.starts_with("line ") && location.contains(" column ") => rest.to_string(),
        _ => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: policy.bucketgate.dev/v1alpha1\nkind: BucketPolicy\nmetadata:\n  name: team\nspec:\n  validate:\n    - path: $.object.metadata.labels.team\n      required: true\n";

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn loads_policies_and_skips_tests_and_dot_entries() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "team.yaml", GOOD);
        write(dir.path(), "team.test.yaml", "not: [a policy");
        std::fs::create_dir(dir.path().join("..data")).unwrap();
        write(&dir.path().join("..data"), "team.yaml", GOOD);
        let set = load(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(set.names(), ["team"]);
        assert_eq!(set.policies[0].line, 1);
    }

    #[test]
    fn errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", &format!("{GOOD}---\n{}", GOOD.replace("required: true", "requird: true")));
        let errors = load(&[dir.path().to_path_buf()]).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].line, Some(17), "{errors:?}");
        assert!(errors[0].to_string().contains("a.yaml:17: unknown field `requird`"), "{}", errors[0]);

        write(dir.path(), "a.yaml", &GOOD.replace("$.object.metadata.labels.team", "$.object["));
        let errors = load(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(
            errors[0].message.contains("spec.validate[0].path: JSONPath \"$.object[\" does not parse"),
            "{errors:?}"
        );
        assert_eq!(errors[0].line, Some(1));

        write(dir.path(), "a.yaml", GOOD);
        write(dir.path(), "b.yaml", GOOD);
        let errors = load(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(errors[0].message.contains("policy \"team\" is also defined at"), "{errors:?}");

        write(dir.path(), "b.yaml", &GOOD.replace("kind: BucketPolicy", "kind: Policy"));
        let errors = load(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(errors[0].message.contains("expected apiVersion policy.bucketgate.dev/v1alpha1 and kind BucketPolicy"));

        let missing = load(&[dir.path().join("nope")]).unwrap_err();
        assert!(missing[0].message.starts_with("cannot read directory"));
    }
}
