//! The provisioner's own credentials: from a Secret named in the class parameters
//! (`cosi.io/provisioner-secret-name` and `-namespace`, templated with `${bucket.name}` and
//! `${bucket.namespace}`), or from the environment variables the configuration names.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use super::Error;
use crate::config::S3Settings;
use crate::driver::Credentials;
use crate::naming::{SECRET_NAME_PARAMETER, check_secret_parameters, provisioner_secret};

/// Keys read from a provisioner Secret, in order of preference.
const ACCESS_KEYS: [&str; 2] = ["AWS_ACCESS_KEY_ID", "accessKeyID"];
const SECRET_KEYS: [&str; 2] = ["AWS_SECRET_ACCESS_KEY", "secretAccessKey"];

pub async fn resolve(
    client: &Client,
    settings: &S3Settings,
    parameters: &BTreeMap<String, String>,
    owner: &(String, String),
) -> Result<Credentials, Error> {
    // The rule admission applies at creation, again here, for objects made before it or
    // while the webhook was away: its words, rather than a Secret that cannot exist.
    if let Some(problem) = check_secret_parameters(parameters).into_iter().next() {
        return Err(Error::Permanent(problem));
    }
    if let Some((namespace, name)) = provisioner_secret(parameters, owner) {
        let secret = Api::<Secret>::namespaced(client.clone(), &namespace).get_opt(&name).await?.ok_or_else(|| {
            Error::ProvisionerSecretMissing(format!(
                "the provisioner Secret {namespace}/{name} does not exist; looked for again, at growing \
                     intervals up to 5 minutes, until it does"
            ))
        })?;
        let data = secret.data.unwrap_or_default();
        let read = |keys: &[&str]| keys.iter().find_map(|k| data.get(*k)).map(|v| v.0.as_slice());
        return key_pair(read(&ACCESS_KEYS), read(&SECRET_KEYS)).ok_or_else(|| {
            Error::Permanent(format!(
                "the provisioner Secret {namespace}/{name} needs keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                 each a key in text"
            ))
        });
    }
    let env = &settings.credentials_from_env;
    let read = |name: &str| std::env::var_os(name).map(|v| v.into_encoded_bytes());
    match key_pair(read(&env.access_key_id).as_deref(), read(&env.secret_access_key).as_deref()) {
        Some(credentials) => Ok(credentials),
        None => Err(Error::Permanent(format!(
            "no credentials for the provisioner: set {} and {} in bucketgate's environment, or name a Secret in the class parameter {SECRET_NAME_PARAMETER}",
            env.access_key_id, env.secret_access_key
        ))),
    }
}

/// A key pair from what a Secret or the environment holds. Whitespace around either is
/// dropped: no S3 key has any, and a value made with `echo KEY | base64` ends in a newline,
/// which would otherwise sign every request wrongly and read as bad credentials.
fn key_pair(access_key_id: Option<&[u8]>, secret_access_key: Option<&[u8]>) -> Option<Credentials> {
    let text = |bytes: Option<&[u8]>| {
        let text = std::str::from_utf8(bytes?).ok()?.trim();
        (!text.is_empty()).then(|| text.to_string())
    };
    Some(Credentials { access_key_id: text(access_key_id)?, secret_access_key: text(secret_access_key)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_without_the_newline_echo_leaves() {
        let pair = key_pair(Some(b"AKIA\n"), Some(b" s3cret\r\n")).unwrap();
        assert_eq!((pair.access_key_id.as_str(), pair.secret_access_key.as_str()), ("AKIA", "s3cret"));
        assert!(key_pair(Some(b"AKIA"), None).is_none());
        assert!(key_pair(Some(b"\n"), Some(b"s3cret")).is_none(), "blank");
        assert!(key_pair(Some(b"AKIA"), Some(&[0xff, 0xfe])).is_none(), "not text");
    }
}
