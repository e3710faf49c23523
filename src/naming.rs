//! Name rules shared by admission and provisioning: Kubernetes names and label values, the
//! backend bucket names built from a Bucket's `bucketPrefix`, and the templated names of
//! provisioner Secrets.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::api::Protocol;

/// Characters the provisioning loop appends to `bucketPrefix` to make a backend bucket name
/// unique. Every backend here caps bucket names at 63 characters.
pub const BUCKET_NAME_SUFFIX_LEN: usize = 16;
pub const BUCKET_NAME_MAX_LEN: usize = 63;
pub const BUCKET_PREFIX_MAX_LEN: usize = BUCKET_NAME_MAX_LEN - BUCKET_NAME_SUFFIX_LEN;

const LABEL_VALUE_MAX_LEN: usize = 63;
const LABEL_HASH_LEN: usize = 8;

/// Short, stable hex digest used to keep shortened names distinct.
pub fn short_hash(input: &str, len: usize) -> String {
    let digest = Sha256::digest(input.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..len.min(hex.len())].to_string()
}

/// Name of the BucketContent provisioned for a Bucket. The KEP's `bucket-<bucket>-<namespace>`
/// is ambiguous (`a-b`/`c` and `a`/`b-c` meet) and can exceed the 253-character limit; a
/// name from namespace and name alone would also collide with the Released content a
/// deleted Bucket leaves behind (`Retain`) when a Bucket of the same name is created again.
/// The Bucket's uid is unique for all time and fixed for the object's life, so the name is
/// deterministic for every retry and never shared.
pub fn content_name_for(bucket_uid: &str) -> String {
    format!("bucket-{}", bucket_uid.to_ascii_lowercase())
}

/// Turns a name (a provisioner's, a policy's) into a valid label value, as the KEP asks for
/// the provisioner label: characters a label value may not hold become `-`. A value that had to be shortened (too long, or with
/// non-alphanumeric ends) ends in a hash of the original, so two provisioners never share
/// a shortened value.
pub fn label_value(name: &str) -> String {
    let mut replaced = String::with_capacity(name.len());
    replaced
        .extend(name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' }));
    if replaced.is_empty() || (replaced.len() <= LABEL_VALUE_MAX_LEN && alnum_ends(&replaced)) {
        return replaced;
    }
    let hash = short_hash(name, LABEL_HASH_LEN);
    let room = LABEL_VALUE_MAX_LEN - LABEL_HASH_LEN - 1;
    let trimmed = replaced.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let head = trimmed[..trimmed.len().min(room)].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if head.is_empty() { hash } else { format!("{head}-{hash}") }
}

/// Of `known`, the one `word` was most likely meant to be, if one is close: a name typed
/// with a part wrong, a letter's case or a dash too many.
pub fn closest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|name| (strsim::normalized_damerau_levenshtein(word, name), name))
        .filter(|(similarity, _)| *similarity >= 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| name)
}

fn alnum_ends(s: &str) -> bool {
    let first = s.chars().next();
    let last = s.chars().last();
    first.is_some_and(|c| c.is_ascii_alphanumeric()) && last.is_some_and(|c| c.is_ascii_alphanumeric())
}

/// What [`check_dns1123_subdomain`] accepts, as a CRD schema's `pattern` (the length is
/// the schema's `maxLength`), so that the API server refuses such names itself.
pub const DNS1123_SUBDOMAIN_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// What [`check_dns1123_label`] accepts (namespace names), as a CRD schema's `pattern`.
pub const DNS1123_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Checks a DNS-1123 subdomain (Secret and most object names). Returns what is wrong.
pub fn check_dns1123_subdomain(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > 253 {
        return Err(format!("is {} characters long; the limit is 253", value.len()));
    }
    if let Some(c) = value.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))) {
        return Err(format!("contains {c:?}; only lower-case letters, digits, '-' and '.' are allowed"));
    }
    if !alnum_ends(value) {
        return Err("must start and end with a lower-case letter or digit".into());
    }
    // As Kubernetes reads it: labels between dots, each alphanumeric at both ends.
    if !value.split('.').all(alnum_ends) {
        return Err("must have a lower-case letter or digit on both sides of each '.'".into());
    }
    Ok(())
}

/// Checks a DNS-1123 label (namespace names).
pub fn check_dns1123_label(value: &str) -> Result<(), String> {
    if value.len() > 63 {
        return Err(format!("is {} characters long; the limit is 63", value.len()));
    }
    check_dns1123_subdomain(value)?;
    if value.contains('.') {
        return Err("must not contain '.'".into());
    }
    Ok(())
}

/// Class parameters naming the Secret with the provisioner's credentials (the KEP's).
pub const SECRET_NAME_PARAMETER: &str = "cosi.io/provisioner-secret-name";
pub const SECRET_NAMESPACE_PARAMETER: &str = "cosi.io/provisioner-secret-namespace";
/// The class parameters the S3 driver reads: only the provisioner Secret's.
pub const DRIVER_PARAMETERS: [&str; 2] = [SECRET_NAME_PARAMETER, SECRET_NAMESPACE_PARAMETER];
/// What the KEP's templating of those parameters replaces, as CSI's Secret templating does.
const TEMPLATE_TOKENS: [&str; 2] = ["${bucket.name}", "${bucket.namespace}"];

/// Replaces `${bucket.name}` and `${bucket.namespace}` with a Bucket's name and namespace.
pub fn template(value: &str, (namespace, name): &(String, String)) -> String {
    value.replace(TEMPLATE_TOKENS[0], name).replace(TEMPLATE_TOKENS[1], namespace)
}

/// The provisioner Secret, (namespace, name), that class or content `parameters` name for
/// the Bucket `owner` (namespace, name); `None` where they name none.
pub fn provisioner_secret(parameters: &BTreeMap<String, String>, owner: &(String, String)) -> Option<(String, String)> {
    let (name, namespace) = (parameters.get(SECRET_NAME_PARAMETER)?, parameters.get(SECRET_NAMESPACE_PARAMETER)?);
    Some((template(namespace, owner), template(name, owner)))
}

/// What is wrong with the provisioner-Secret parameters of a class or content, each said
/// with its fix. Any of these would fail every Bucket provisioned from them, later and out
/// of the admin's sight: a name without a namespace, a token that is not replaced (CSI's
/// `${pvc.name}` for the KEP's `${bucket.name}`), or literal text that makes no valid name.
pub fn check_secret_parameters(parameters: &BTreeMap<String, String>) -> Vec<String> {
    let (name, namespace) = (parameters.get(SECRET_NAME_PARAMETER), parameters.get(SECRET_NAMESPACE_PARAMETER));
    let mut problems = Vec::new();
    if name.is_some() != namespace.is_some() {
        let (set, missing) = match name {
            Some(_) => (SECRET_NAME_PARAMETER, SECRET_NAMESPACE_PARAMETER),
            None => (SECRET_NAMESPACE_PARAMETER, SECRET_NAME_PARAMETER),
        };
        problems.push(format!(
            "parameters set {set} but not {missing}: set both, or neither to use the provisioner's own credentials"
        ));
    }
    let names = [
        (SECRET_NAME_PARAMETER, name, "Secret name", check_dns1123_subdomain as fn(&str) -> Result<(), String>),
        (SECRET_NAMESPACE_PARAMETER, namespace, "namespace name", check_dns1123_label),
    ];
    for (key, value, what, check) in names {
        let Some(value) = value else { continue };
        if let Some(token) = unknown_token(value) {
            problems.push(format!(
                "parameters {key} is {value:?}, and {token:?} is not replaced: the only tokens are {} and {}",
                TEMPLATE_TOKENS[0], TEMPLATE_TOKENS[1]
            ));
        } else if let Err(problem) = check(&template(value, &("a".into(), "a".into()))) {
            // Any Bucket's own names are valid here; what is around them must be too.
            problems.push(format!("parameters {key} is {value:?}, which makes no valid {what}: it {problem}"));
        }
    }
    problems
}

/// Where the provisioner Secret's name takes the Bucket's name while its namespace is not
/// the Bucket's own: whoever names a Bucket would then choose which Secret of that
/// namespace bucketgate reads as the provisioner's credentials, another class's included
/// (whose key, on a store without IAM, would be copied into the Bucket's Secret). Said with
/// its fix. Judged for new classes, contents and Buckets, before a greenfield content is
/// made and before a Bucket first binds an existing one, not when a Secret is read: Buckets
/// bound before go on, and are released.
pub fn secret_chosen_by_bucket(parameters: &BTreeMap<String, String>) -> Option<String> {
    let (name, namespace) = (parameters.get(SECRET_NAME_PARAMETER)?, parameters.get(SECRET_NAMESPACE_PARAMETER)?);
    let (bucket_name, bucket_namespace) = (TEMPLATE_TOKENS[0], TEMPLATE_TOKENS[1]);
    (name.contains(bucket_name) && !namespace.contains(bucket_namespace)).then(|| {
        format!(
            "parameters {SECRET_NAME_PARAMETER} is {name:?} in namespace {namespace:?}, not the Bucket's own: \
             whoever names a Bucket would choose which Secret of {namespace:?} bucketgate reads as the \
             provisioner's credentials, another class's included. Set {SECRET_NAMESPACE_PARAMETER} to \
             \"{bucket_namespace}\" (each namespace brings its own Secret), or name the Secret without {bucket_name}"
        )
    })
}

/// The first `${...}` in `value` that [`template`] leaves as it is.
fn unknown_token(value: &str) -> Option<&str> {
    let mut rest = value;
    while let Some(at) = rest.find("${") {
        rest = &rest[at..];
        match TEMPLATE_TOKENS.iter().find(|t| rest.starts_with(**t)) {
            Some(token) => rest = &rest[token.len()..],
            None => return Some(rest.find('}').map_or(rest, |end| &rest[..=end])),
        }
    }
    None
}

/// Problems and advice about a `bucketPrefix` for a protocol.
#[derive(Debug, Default, PartialEq)]
pub struct PrefixCheck {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Checks that `prefix` plus the provisioner's unique suffix of
/// [`BUCKET_NAME_SUFFIX_LEN`] lower-case letters and digits is a valid bucket name for the
/// protocol's backends, and says exactly what is wrong and what would work.
pub fn check_bucket_prefix(prefix: &str, protocol: Protocol) -> PrefixCheck {
    let mut check = PrefixCheck::default();
    let allowed = |c: char| match protocol {
        Protocol::S3 => c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'),
        Protocol::Gcs => c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_'),
        Protocol::AzureBlob => c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
    };
    let allowed_text = match protocol {
        Protocol::S3 => "lower-case letters, digits, '-' and '.'",
        Protocol::Gcs => "lower-case letters, digits, '-', '_' and '.'",
        Protocol::AzureBlob => "lower-case letters, digits and '-'",
    };

    let upper: String = prefix.chars().filter(|c| c.is_ascii_uppercase()).collect();
    if !upper.is_empty() {
        check.errors.push(format!("has upper-case letters ({upper}); {protocol} bucket names are lower case"));
    }
    let mut bad: Vec<char> = prefix.chars().filter(|c| !c.is_ascii_uppercase() && !allowed(*c)).collect();
    bad.dedup();
    if !bad.is_empty() {
        let shown: Vec<String> = bad.iter().map(|c| format!("{c:?}")).collect();
        check
            .errors
            .push(format!("contains {}; {protocol} bucket names may hold only {allowed_text}", shown.join(", ")));
    }
    if prefix.len() > BUCKET_PREFIX_MAX_LEN {
        check.errors.push(format!(
            "is {} characters long; at most {BUCKET_PREFIX_MAX_LEN} leave room for the \
             {BUCKET_NAME_SUFFIX_LEN}-character unique suffix within the {BUCKET_NAME_MAX_LEN}-character limit",
            prefix.len()
        ));
    }
    if let Some(first) = prefix.chars().next()
        && !(first.is_ascii_lowercase() || first.is_ascii_digit())
        && !first.is_ascii_uppercase()
    {
        check.errors.push("must start with a lower-case letter or digit".into());
    }
    match protocol {
        Protocol::S3 => {
            if prefix.contains("..") {
                check.errors.push("contains \"..\"; S3 bucket names may not hold two periods in a row".into());
            }
            for reserved in ["xn--", "sthree-", "amzn-s3-demo-"] {
                if prefix.starts_with(reserved) {
                    check.errors.push(format!("starts with {reserved:?}, which S3 reserves"));
                }
            }
            if prefix.contains('.') {
                check.warnings.push(
                    "bucketPrefix contains '.': virtual-hosted-style HTTPS does not work with dotted bucket names"
                        .into(),
                );
            }
        }
        Protocol::Gcs => {
            if prefix.starts_with("goog") {
                check.errors.push("starts with \"goog\", which Google Cloud Storage reserves".into());
            }
        }
        Protocol::AzureBlob => {
            if prefix.contains("--") {
                check.errors.push("contains \"--\"; Azure container names may not hold two hyphens in a row".into());
            }
        }
    }
    if !check.errors.is_empty() {
        let suggestion = suggest_prefix(prefix, protocol);
        if !suggestion.is_empty()
            && suggestion != prefix
            && check_bucket_prefix(&suggestion, protocol).errors.is_empty()
            && let Some(last) = check.errors.last_mut()
        {
            last.push_str(&format!(": use {suggestion:?}"));
        }
    }
    check
}

fn suggest_prefix(prefix: &str, protocol: Protocol) -> String {
    let mut out = String::new();
    for c in prefix.chars().map(|c| c.to_ascii_lowercase()) {
        let keep = c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        let next = if keep { c } else { '-' };
        let doubled = next == '-' && out.ends_with('-') && protocol == Protocol::AzureBlob;
        if !doubled {
            out.push(next);
        }
    }
    let out = out.trim_start_matches('-');
    out[..out.len().min(BUCKET_PREFIX_MAX_LEN)].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_value_replaces_invalid_characters() {
        assert_eq!(label_value("rook-ceph.ceph.rook.io/bucket"), "rook-ceph.ceph.rook.io-bucket");
        assert_eq!(label_value("s3.example.com"), "s3.example.com");
        assert_eq!(label_value(""), "");
    }

    #[test]
    fn shortened_label_values_stay_distinct_and_valid() {
        let a = format!("{}.example.com/a", "x".repeat(70));
        let b = format!("{}.example.com/b", "x".repeat(70));
        let (va, vb) = (label_value(&a), label_value(&b));
        assert_ne!(va, vb);
        for v in [&va, &vb] {
            assert!(v.len() <= 63, "{v}");
            assert!(alnum_ends(v), "{v}");
        }
        // Non-alphanumeric ends are a shortening too, and get the hash.
        let v = label_value("/odd/");
        assert!(v.starts_with("odd-") && v.len() == 3 + 1 + 8, "{v}");
        assert_eq!(label_value("///"), short_hash("///", 8));
    }

    #[test]
    fn content_names_are_valid_and_distinct() {
        let a = content_name_for("2F845F60-d4c4-4d1e-ab39-3b8cc4e25086");
        assert_eq!(a, "bucket-2f845f60-d4c4-4d1e-ab39-3b8cc4e25086");
        assert!(check_dns1123_subdomain(&a).is_ok());
        assert_ne!(a, content_name_for("a2b9d61c-96a8-4d1a-9532-630184d2c774"));
    }

    #[test]
    fn dns1123() {
        assert!(check_dns1123_subdomain("photos-creds").is_ok());
        assert!(check_dns1123_subdomain("a.b-c").is_ok());
        assert!(check_dns1123_subdomain("Photos").unwrap_err().contains("'P'"));
        assert!(check_dns1123_subdomain("-a").is_err());
        assert!(check_dns1123_subdomain("a.-b").unwrap_err().contains("both sides of each '.'"));
        assert!(check_dns1123_subdomain(&"a".repeat(254)).is_err());
        assert!(check_dns1123_label("a.b").is_err());
        assert!(check_dns1123_label("team-a").is_ok());
    }

    /// The CRDs' patterns and the webhook's checks must refuse the same names: the API server
    /// enforces one, bucketgate's messages explain the other.
    #[test]
    fn the_schema_pattern_accepts_what_the_check_accepts() {
        let pattern = regex::Regex::new(DNS1123_SUBDOMAIN_PATTERN).unwrap();
        let names = [
            "photos",
            "a",
            "0",
            "a.b-c",
            "bucket-2f845f60",
            "a..b",
            "a.-b",
            "-a",
            "a-",
            ".a",
            "a.",
            "Photos",
            "a_b",
            "",
            "legacy-logs?watch=true",
            "x/../../api/v1/secrets",
            "a b",
            "é",
            "a\nb",
            "a%2fb",
        ];
        let label = regex::Regex::new(DNS1123_LABEL_PATTERN).unwrap();
        for name in names.into_iter().chain(["team-a", "a.b", "a-b.c"]) {
            assert_eq!(pattern.is_match(name), check_dns1123_subdomain(name).is_ok(), "{name:?}");
            assert_eq!(label.is_match(name), check_dns1123_label(name).is_ok(), "{name:?}");
        }
    }

    #[test]
    fn provisioner_secret_parameters_are_templated_and_checked() {
        let owner = ("team-a".to_string(), "photos".to_string());
        assert_eq!(template("${bucket.namespace}-${bucket.name}", &owner), "team-a-photos");
        let check = |pairs: &[(&str, &str)]| {
            let parameters = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            check_secret_parameters(&parameters)
        };
        let (name, namespace) = (SECRET_NAME_PARAMETER, SECRET_NAMESPACE_PARAMETER);
        // The KEP's three examples, and none at all.
        assert!(check(&[]).is_empty());
        assert!(check(&[(name, "foo"), (namespace, "bar")]).is_empty());
        assert!(check(&[(name, "${bucket.name}"), (namespace, "${bucket.namespace}")]).is_empty());
        assert!(check(&[(name, "${bucket.namespace}-s3-admin"), (namespace, "bucketgate-system")]).is_empty());

        let problems = check(&[(name, "foo")]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("but not cosi.io/provisioner-secret-namespace"), "{problems:?}");
        assert!(check(&[(namespace, "bar")])[0].contains("but not cosi.io/provisioner-secret-name"));

        let problems = check(&[(name, "${pvc.name}-creds"), (namespace, "${bucket.namespace")]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains(r#""${pvc.name}" is not replaced"#), "{problems:?}");
        assert!(problems[1].contains(r#""${bucket.namespace" is not replaced"#), "{problems:?}");

        let problems = check(&[(name, "S3_${bucket.name}"), (namespace, "${bucket.namespace}.system")]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("makes no valid Secret name: it contains 'S'"), "{problems:?}");
        assert!(problems[1].contains("makes no valid namespace name: it must not contain '.'"), "{problems:?}");
    }

    #[test]
    fn a_buckets_name_may_choose_only_among_its_own_namespaces_secrets() {
        let chosen = |name: &str, namespace: &str| {
            let parameters = [(SECRET_NAME_PARAMETER, name), (SECRET_NAMESPACE_PARAMETER, namespace)];
            secret_chosen_by_bucket(&parameters.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        };
        // The KEP's examples: one Secret for all, each namespace's own, each Bucket's own
        // in its namespace.
        assert_eq!(chosen("foo", "bar"), None);
        assert_eq!(chosen("${bucket.namespace}-s3-admin", "bucketgate-system"), None);
        assert_eq!(chosen("${bucket.name}", "${bucket.namespace}"), None);
        assert_eq!(chosen("${bucket.name}-key", "${bucket.namespace}-keys"), None, "a namespace of its own still");
        // A Bucket named minio-admin would read the Secret of the minio class.
        let problem = chosen("${bucket.name}", "bucketgate-system").unwrap();
        assert!(problem.starts_with(r#"parameters cosi.io/provisioner-secret-name is "${bucket.name}" in namespace "bucketgate-system", not the Bucket's own"#), "{problem}");
        assert!(problem.ends_with(r#"Set cosi.io/provisioner-secret-namespace to "${bucket.namespace}" (each namespace brings its own Secret), or name the Secret without ${bucket.name}"#), "{problem}");
        // Namespace and name run together: team / a-x and team-a / x would read one Secret.
        assert!(chosen("${bucket.namespace}-${bucket.name}", "bucketgate-system").is_some());
    }

    #[test]
    fn kep_example_prefix_is_refused_with_a_fix() {
        let check = check_bucket_prefix("YosemitePhotos-", Protocol::S3);
        assert_eq!(check.errors.len(), 1, "{check:?}");
        assert!(check.errors[0].contains("upper-case letters (YP)"), "{check:?}");
        assert!(check.errors[0].ends_with("use \"yosemitephotos-\""), "{check:?}");
        assert!(check_bucket_prefix("yosemitephotos-", Protocol::S3).errors.is_empty());
    }

    #[test]
    fn prefix_rules_per_protocol() {
        assert!(check_bucket_prefix("", Protocol::S3).errors.is_empty());
        let long = "a".repeat(BUCKET_PREFIX_MAX_LEN + 1);
        assert!(check_bucket_prefix(&long, Protocol::S3).errors[0].contains("48 characters"));
        assert!(check_bucket_prefix(&"a".repeat(BUCKET_PREFIX_MAX_LEN), Protocol::S3).errors.is_empty());
        assert!(!check_bucket_prefix("a..b", Protocol::S3).errors.is_empty());
        assert!(!check_bucket_prefix("xn--a", Protocol::S3).errors.is_empty());
        assert!(!check_bucket_prefix("-a", Protocol::S3).errors.is_empty());
        assert_eq!(check_bucket_prefix("logs.2024-", Protocol::S3).warnings.len(), 1);
        assert!(check_bucket_prefix("my_logs-", Protocol::Gcs).errors.is_empty());
        assert!(!check_bucket_prefix("my_logs-", Protocol::S3).errors.is_empty());
        assert!(!check_bucket_prefix("a--b", Protocol::AzureBlob).errors.is_empty());
        assert!(!check_bucket_prefix("a.b", Protocol::AzureBlob).errors.is_empty());
        let bad = check_bucket_prefix("team a/", Protocol::S3);
        assert!(bad.errors[0].contains("' ', '/'"), "{bad:?}");
    }
}
