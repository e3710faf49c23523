//! What a class's parameters ask of each bucket made from it: versioning, an object lock
//! with a default retention, objects expiring after a number of days, unfinished
//! multipart uploads given up after a number of days, and default encryption at rest.
//! Admission reads them the same way as the loop, so that a class whose values no store
//! could carry out is refused when it is made, not at every Bucket.

use std::collections::BTreeMap;
use std::time::Duration;

pub const VERSIONING: &str = "versioning";
pub const OBJECT_LOCK: &str = "objectLock";
pub const RETENTION_MODE: &str = "objectLockRetentionMode";
pub const RETENTION_DAYS: &str = "objectLockRetentionDays";
pub const EXPIRATION_DAYS: &str = "expirationDays";
pub const ABORT_UPLOADS_DAYS: &str = "abortIncompleteMultipartUploadDays";
pub const ENCRYPTION: &str = "serverSideEncryption";
pub const KMS_KEY_ID: &str = "kmsKeyId";

/// The parameters read here.
pub const BUCKET_PARAMETERS: [&str; 8] = [
    VERSIONING,
    OBJECT_LOCK,
    RETENTION_MODE,
    RETENTION_DAYS,
    EXPIRATION_DAYS,
    ABORT_UPLOADS_DAYS,
    ENCRYPTION,
    KMS_KEY_ID,
];

pub const KEY_MAX_AGE_DAYS: &str = "keyMaxAgeDays";
pub const KEY_ROTATION_GRACE_HOURS: &str = "keyRotationGraceHours";

/// The parameters [`KeyRotation`] reads.
pub const KEY_PARAMETERS: [&str; 2] = [KEY_MAX_AGE_DAYS, KEY_ROTATION_GRACE_HOURS];

/// S3's own limit for a default retention in days is 100 years; expirations are held to
/// the same.
pub const MAX_DAYS: u32 = 36_500;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketOptions {
    /// Every write keeps the object's earlier versions.
    pub versioning: bool,
    /// Objects can be locked against deletion; S3 turns versioning on with it.
    pub object_lock: bool,
    /// The lock every new object gets unless its writer says otherwise.
    pub retention: Option<Retention>,
    /// Objects are deleted this many days after they were written (in a versioned bucket,
    /// after they stopped being the current version).
    pub expiration_days: Option<u32>,
    /// Multipart uploads not completed this many days after they began are aborted and their
    /// parts deleted: a client that dies mid-upload leaves parts no listing of objects shows,
    /// stored and paid for until then.
    pub abort_uploads_days: Option<u32>,
    /// How the store encrypts what is written without asking for encryption of its own.
    pub encryption: Option<Encryption>,
}

/// A bucket's default encryption at rest, as S3 spells its algorithms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    /// `AES256`: keys the store holds (SSE-S3).
    S3,
    /// `aws:kms`: keys of the store's KMS, this one (an id, ARN or alias) or, without, the
    /// store's default (on AWS the account's `aws/s3` key).
    Kms(Option<String>),
}

impl Encryption {
    pub fn algorithm(&self) -> &'static str {
        match self {
            Encryption::S3 => "AES256",
            Encryption::Kms(_) => "aws:kms",
        }
    }

    pub fn kms_key(&self) -> Option<&str> {
        match self {
            Encryption::S3 => None,
            Encryption::Kms(key) => key.as_deref(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub mode: RetentionMode,
    pub days: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionMode {
    /// Users with `s3:BypassGovernanceRetention` may still delete.
    Governance,
    /// No one may delete, the store's root user included, until the retention ends.
    Compliance,
}

impl RetentionMode {
    /// As S3 spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionMode::Governance => "GOVERNANCE",
            RetentionMode::Compliance => "COMPLIANCE",
        }
    }
}

impl BucketOptions {
    /// What `parameters` ask for, or each problem with them, said with its fix. Values are
    /// S3's words (`Enabled`, `GOVERNANCE`): a YAML `true` would not be a string, which the
    /// CRD refuses anyway.
    pub fn from_parameters(parameters: &BTreeMap<String, String>) -> Result<BucketOptions, Vec<String>> {
        let mut problems = Vec::new();
        let mut switch = |key: &str| match parameters.get(key).map(String::as_str) {
            None => None,
            Some("Enabled") => Some(true),
            Some("Disabled") => Some(false),
            Some(other) => {
                problems.push(format!("parameters {key} is {other:?}: write Enabled or Disabled"));
                None
            }
        };
        let (versioning, object_lock) = (switch(VERSIONING), switch(OBJECT_LOCK).unwrap_or(false));
        if object_lock && versioning == Some(false) {
            problems.push(format!(
                "parameters {OBJECT_LOCK} is Enabled and {VERSIONING} Disabled: an object lock needs versioning, \
                 which S3 turns on with it; remove {VERSIONING}: Disabled"
            ));
        }
        let mode = parameters.get(RETENTION_MODE).map(|mode| match mode.as_str() {
            "GOVERNANCE" => Some(RetentionMode::Governance),
            "COMPLIANCE" => Some(RetentionMode::Compliance),
            other => {
                problems.push(format!("parameters {RETENTION_MODE} is {other:?}: write GOVERNANCE or COMPLIANCE"));
                None
            }
        });
        let mut days_of = |key: &str| {
            parameters.get(key).map(|days| match days.parse::<u32>() {
                Ok(days @ 1..=MAX_DAYS) => Some(days),
                _ => {
                    problems.push(format!(
                        "parameters {key} is {days:?}: write a whole number of days from 1 to {MAX_DAYS}"
                    ));
                    None
                }
            })
        };
        let (days, expiration_days) = (days_of(RETENTION_DAYS), days_of(EXPIRATION_DAYS).flatten());
        let abort_uploads_days = days_of(ABORT_UPLOADS_DAYS).flatten();
        let retention = match (mode, days) {
            (None, None) => None,
            (Some(mode), Some(days)) => mode.zip(days).map(|(mode, days)| Retention { mode, days }),
            (Some(_), None) | (None, Some(_)) => {
                problems.push(format!("a default retention needs both {RETENTION_MODE} and {RETENTION_DAYS}"));
                None
            }
        };
        let encryption = match (parameters.get(ENCRYPTION).map(String::as_str), parameters.get(KMS_KEY_ID)) {
            (None, None) => None,
            (Some("AES256"), None) => Some(Encryption::S3),
            (Some("aws:kms"), key) => match key.map(|key| key.trim()) {
                Some("") => {
                    problems.push(format!(
                        "parameters {KMS_KEY_ID} is empty: name the KMS key, or remove it for the store's default"
                    ));
                    None
                }
                key => Some(Encryption::Kms(key.map(str::to_string))),
            },
            (Some("AES256"), Some(_)) => {
                problems.push(format!(
                    "parameters {KMS_KEY_ID} is for {ENCRYPTION}: aws:kms; AES256 uses the store's own keys: remove \
                     {KMS_KEY_ID}, or write aws:kms"
                ));
                None
            }
            (None, Some(_)) => {
                problems.push(format!("parameters {KMS_KEY_ID} needs {ENCRYPTION}: aws:kms"));
                None
            }
            (Some(other), _) => {
                problems.push(format!("parameters {ENCRYPTION} is {other:?}: write AES256 or aws:kms"));
                None
            }
        };
        if (mode.is_some() || days.is_some()) && !object_lock {
            problems
                .push(format!("a default retention ({RETENTION_MODE}, {RETENTION_DAYS}) needs {OBJECT_LOCK}: Enabled"));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let versioning = versioning.unwrap_or(false) || object_lock;
        Ok(BucketOptions { versioning, object_lock, retention, expiration_days, abort_uploads_days, encryption })
    }

    /// What was asked, to follow "created bucket NAME" where users look (`kubectl
    /// describe`): empty for a plain bucket.
    pub fn summary(&self) -> String {
        let mut asked = Vec::new();
        if self.versioning && !self.object_lock {
            asked.push("versioning".to_string());
        }
        match (self.object_lock, self.retention) {
            (true, Some(Retention { mode, days })) => {
                asked.push(format!("an object lock keeping each new object {days} days ({})", mode.as_str()))
            }
            (true, None) => asked.push("an object lock".into()),
            _ => {}
        }
        if let Some(days) = self.expiration_days {
            asked.push(format!("objects expiring after {days} days"));
        }
        if let Some(days) = self.abort_uploads_days {
            asked.push(format!("unfinished uploads aborted after {days} days"));
        }
        match &self.encryption {
            Some(Encryption::Kms(Some(key))) => asked.push(format!("objects encrypted at rest (aws:kms, key {key})")),
            Some(encryption) => asked.push(format!("objects encrypted at rest ({})", encryption.algorithm())),
            None => {}
        }
        match asked.split_last() {
            None => String::new(),
            Some((only, [])) => format!(" with {only}"),
            Some((last, rest)) => format!(" with {} and {last}", rest.join(", ")),
        }
    }
}

/// How old a key made for a Bucket alone may grow before the loop makes it a new one, and
/// how long the key it replaces goes on working beside it: pods that read a mounted Secret
/// see the new key within a minute or two, those that read it into their environment when
/// they restart, which the grace leaves time for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRotation {
    pub max_age: Duration,
    pub grace: Duration,
}

impl KeyRotation {
    /// A day: time for a rollout, or the nightly restart of a job.
    pub const DEFAULT_GRACE_HOURS: u32 = 24;
    /// A month: longer would leave two keys working most of the time for short ages.
    pub const MAX_GRACE_HOURS: u32 = 720;

    /// What `parameters` ask (`None`: keys are not rotated), or each problem with them.
    pub fn from_parameters(parameters: &BTreeMap<String, String>) -> Result<Option<KeyRotation>, Vec<String>> {
        let days = parameters.get(KEY_MAX_AGE_DAYS).map(|days| match days.parse::<u32>() {
            Ok(days @ 1..=MAX_DAYS) => Ok(days),
            _ => Err(format!(
                "parameters {KEY_MAX_AGE_DAYS} is {days:?}: write a whole number of days from 1 to {MAX_DAYS}"
            )),
        });
        let grace = parameters.get(KEY_ROTATION_GRACE_HOURS).map(|hours| match hours.parse::<u32>() {
            Ok(hours @ 0..=Self::MAX_GRACE_HOURS) => Ok(hours),
            _ => Err(format!(
                "parameters {KEY_ROTATION_GRACE_HOURS} is {hours:?}: write a whole number of hours from 0 to {}",
                Self::MAX_GRACE_HOURS
            )),
        });
        let (days, hours) = match (days, grace) {
            (None, None) => return Ok(None),
            (None, Some(_)) => {
                return Err(vec![format!(
                    "parameters {KEY_ROTATION_GRACE_HOURS} without {KEY_MAX_AGE_DAYS} rotates no key: add {KEY_MAX_AGE_DAYS}, \
                     or remove it"
                )]);
            }
            (Some(days), grace) => (days, grace.unwrap_or(Ok(Self::DEFAULT_GRACE_HOURS))),
        };
        let problems: Vec<String> = [&days, &hours].into_iter().filter_map(|r| r.as_ref().err().cloned()).collect();
        let (Ok(days), Ok(hours)) = (days, hours) else { return Err(problems) };
        if hours >= days * 24 {
            // keyMaxAgeDays: "1" alone meets the default grace: say where the 24 comes from.
            let given = if parameters.contains_key(KEY_ROTATION_GRACE_HOURS) { "" } else { " (its default)" };
            return Err(vec![format!(
                "parameters {KEY_ROTATION_GRACE_HOURS} is {hours}{given}, {KEY_MAX_AGE_DAYS} {days}: the key replaced \
                 must stop working before the next is due, or two keys work all the time; make the grace shorter than \
                 the age"
            )]);
        }
        let span = |hours: u32| Duration::from_secs(u64::from(hours) * 3600);
        Ok(Some(KeyRotation { max_age: span(days * 24), grace: span(hours) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_rotated_where_a_class_gives_them_an_age() {
        let rotation = |pairs: &[(&str, &str)]| {
            KeyRotation::from_parameters(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        };
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(rotation(&[]), Ok(None));
        assert_eq!(rotation(&[(KEY_MAX_AGE_DAYS, "30")]), Ok(Some(KeyRotation { max_age: day * 30, grace: day })));
        let quick = rotation(&[(KEY_MAX_AGE_DAYS, "1"), (KEY_ROTATION_GRACE_HOURS, "0")]);
        assert_eq!(quick, Ok(Some(KeyRotation { max_age: day, grace: Duration::ZERO })));
        for (pairs, says) in [
            (&[(KEY_MAX_AGE_DAYS, "0")][..], "write a whole number of days from 1 to 36500"),
            (&[(KEY_MAX_AGE_DAYS, "30d")], "write a whole number of days"),
            (&[(KEY_MAX_AGE_DAYS, "30"), (KEY_ROTATION_GRACE_HOURS, "721")], "hours from 0 to 720"),
            (&[(KEY_ROTATION_GRACE_HOURS, "2")], "without keyMaxAgeDays rotates no key"),
            (&[(KEY_MAX_AGE_DAYS, "1")], "keyRotationGraceHours is 24 (its default), keyMaxAgeDays 1"),
            (&[(KEY_MAX_AGE_DAYS, "1"), (KEY_ROTATION_GRACE_HOURS, "30")], "make the grace shorter than the age"),
        ] {
            let problems = rotation(pairs).unwrap_err();
            assert!(problems.iter().any(|p| p.contains(says)), "{pairs:?}: {problems:?}");
        }
        let both = rotation(&[(KEY_MAX_AGE_DAYS, "x"), (KEY_ROTATION_GRACE_HOURS, "y")]).unwrap_err();
        assert_eq!(both.len(), 2, "each said: {both:?}");
    }

    fn parsed(pairs: &[(&str, &str)]) -> Result<BucketOptions, Vec<String>> {
        BucketOptions::from_parameters(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn nothing_asked_is_a_plain_bucket() {
        assert_eq!(parsed(&[]), Ok(BucketOptions::default()));
        assert_eq!(parsed(&[("tier", "gold"), (VERSIONING, "Disabled")]), Ok(BucketOptions::default()));
    }

    #[test]
    fn an_object_lock_brings_versioning_and_may_have_a_default_retention() {
        assert_eq!(parsed(&[(VERSIONING, "Enabled")]), Ok(BucketOptions { versioning: true, ..Default::default() }));
        let locked = BucketOptions { versioning: true, object_lock: true, ..Default::default() };
        assert_eq!(parsed(&[(OBJECT_LOCK, "Enabled")]), Ok(locked.clone()));
        let retained = parsed(&[(OBJECT_LOCK, "Enabled"), (RETENTION_MODE, "COMPLIANCE"), (RETENTION_DAYS, "30")]);
        let retention = Some(Retention { mode: RetentionMode::Compliance, days: 30 });
        assert_eq!(retained, Ok(BucketOptions { retention, ..locked }));
        let expiring = BucketOptions { expiration_days: Some(30), ..Default::default() };
        assert_eq!(parsed(&[(EXPIRATION_DAYS, "30")]), Ok(expiring));
        let tidied = BucketOptions { abort_uploads_days: Some(7), ..Default::default() };
        assert_eq!(parsed(&[(ABORT_UPLOADS_DAYS, "7")]), Ok(tidied));
    }

    #[test]
    fn a_class_may_ask_for_encryption_at_rest_with_the_stores_keys_or_its_kms() {
        let encryption = |pairs: &[(&str, &str)]| parsed(pairs).map(|options| options.encryption);
        assert_eq!(encryption(&[(ENCRYPTION, "AES256")]), Ok(Some(Encryption::S3)));
        assert_eq!(encryption(&[(ENCRYPTION, "aws:kms")]), Ok(Some(Encryption::Kms(None))));
        let key = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        assert_eq!(
            encryption(&[(ENCRYPTION, "aws:kms"), (KMS_KEY_ID, key)]),
            Ok(Some(Encryption::Kms(Some(key.into()))))
        );
        let problems = |pairs: &[(&str, &str)]| parsed(pairs).unwrap_err().join("\n");
        assert!(
            problems(&[(ENCRYPTION, "aes256")])
                .contains(r#"serverSideEncryption is "aes256": write AES256 or aws:kms"#)
        );
        let stores_own = problems(&[(ENCRYPTION, "AES256"), (KMS_KEY_ID, key)]);
        assert!(stores_own.contains("remove kmsKeyId, or write aws:kms"), "{stores_own}");
        assert!(problems(&[(KMS_KEY_ID, key)]).contains("kmsKeyId needs serverSideEncryption: aws:kms"));
        assert!(problems(&[(ENCRYPTION, "aws:kms"), (KMS_KEY_ID, " ")]).contains("kmsKeyId is empty"));
    }

    #[test]
    fn what_was_asked_is_summed_up() {
        let summary = |pairs: &[(&str, &str)]| parsed(pairs).unwrap().summary();
        assert_eq!(summary(&[]), "");
        assert_eq!(summary(&[(VERSIONING, "Enabled")]), " with versioning");
        let all = [
            (OBJECT_LOCK, "Enabled"),
            (RETENTION_MODE, "COMPLIANCE"),
            (RETENTION_DAYS, "30"),
            (EXPIRATION_DAYS, "365"),
        ];
        assert_eq!(
            summary(&all),
            " with an object lock keeping each new object 30 days (COMPLIANCE) and objects expiring after 365 days"
        );
        assert_eq!(summary(&[(ENCRYPTION, "AES256")]), " with objects encrypted at rest (AES256)");
        let kms = summary(&[(ENCRYPTION, "aws:kms"), (KMS_KEY_ID, "alias/photos")]);
        assert_eq!(kms, " with objects encrypted at rest (aws:kms, key alias/photos)");
        let three = [(VERSIONING, "Enabled"), (EXPIRATION_DAYS, "7"), (ABORT_UPLOADS_DAYS, "2")];
        assert_eq!(
            summary(&three),
            " with versioning, objects expiring after 7 days and unfinished uploads aborted after 2 days"
        );
    }

    #[test]
    fn each_problem_is_said_with_its_fix() {
        let problems = |pairs: &[(&str, &str)]| parsed(pairs).unwrap_err().join("\n");
        assert!(problems(&[(VERSIONING, "true")]).contains(r#"versioning is "true": write Enabled or Disabled"#));
        let contradiction = problems(&[(OBJECT_LOCK, "Enabled"), (VERSIONING, "Disabled")]);
        assert!(contradiction.contains("remove versioning: Disabled"), "{contradiction}");
        let lowercase = problems(&[(OBJECT_LOCK, "Enabled"), (RETENTION_MODE, "governance"), (RETENTION_DAYS, "1")]);
        assert!(lowercase.contains("write GOVERNANCE or COMPLIANCE"), "{lowercase}");
        for days in ["0", "-1", "30d", "36501", ""] {
            let said = problems(&[(OBJECT_LOCK, "Enabled"), (RETENTION_MODE, "GOVERNANCE"), (RETENTION_DAYS, days)]);
            assert!(said.contains("from 1 to 36500"), "{days:?}: {said}");
        }
        assert!(problems(&[(EXPIRATION_DAYS, "0")]).contains(r#"expirationDays is "0": write a whole number"#));
        let never = problems(&[(ABORT_UPLOADS_DAYS, "never")]);
        assert!(never.contains(r#"abortIncompleteMultipartUploadDays is "never": write a whole number"#), "{never}");
        let half = problems(&[(OBJECT_LOCK, "Enabled"), (RETENTION_DAYS, "7")]);
        assert!(half.contains("needs both objectLockRetentionMode and objectLockRetentionDays"), "{half}");
        let unlocked = problems(&[(RETENTION_MODE, "GOVERNANCE"), (RETENTION_DAYS, "7")]);
        assert!(unlocked.contains("needs objectLock: Enabled"), "{unlocked}");
        // All of them at once, not only the first.
        assert_eq!(parsed(&[(VERSIONING, "on"), (OBJECT_LOCK, "yes")]).unwrap_err().len(), 2);
    }
}
