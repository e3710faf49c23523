//! The provisioner's own credentials: from a Secret named in the class parameters
//! (`cosi.io/provisioner-secret-name` and `-namespace`, templated with `${bucket.name}` and
//! `${bucket.namespace}`), or from the environment variables the configuration names.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use super::Error;
use crate::config::S3Settings;
use crate::driver::Credentials;
use crate::naming::{SECRET_NAME_PARAMETER, SECRET_NAMESPACE_PARAMETER, check_secret_parameters, template};

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
    if let (Some(name), Some(namespace)) =
        (parameters.get(SECRET_NAME_PARAMETER), parameters.get(SECRET_NAMESPACE_PARAMETER))
    {
        let (name, namespace) = (template(name, owner), template(namespace, owner));
        let secret = Api::<Secret>::namespaced(client.clone(), &namespace)
            .get_opt(&name)
            .await?
            .ok_or_else(|| Error::Permanent(format!("the provisioner Secret {namespace}/{name} does not exist")))?;
        let data = secret.data.unwrap_or_default();
        let read =
            |keys: &[&str]| keys.iter().find_map(|k| data.get(*k)).and_then(|v| String::from_utf8(v.0.clone()).ok());
        return match (read(&ACCESS_KEYS), read(&SECRET_KEYS)) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials { access_key_id, secret_access_key }),
            _ => Err(Error::Permanent(format!(
                "the provisioner Secret {namespace}/{name} needs keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ))),
        };
    }
    let env = &settings.credentials_from_env;
    match (std::env::var(&env.access_key_id), std::env::var(&env.secret_access_key)) {
        (Ok(access_key_id), Ok(secret_access_key)) => Ok(Credentials { access_key_id, secret_access_key }),
        _ => Err(Error::Permanent(format!(
            "no credentials for the provisioner: set {} and {} in bucketgate's environment, or name a Secret in the class parameter {SECRET_NAME_PARAMETER}",
            env.access_key_id, env.secret_access_key
        ))),
    }
}
