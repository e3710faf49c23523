//! Command line: `serve`, `certs`, `crds`, `review`, `policy` (lint, test, audit) and `config check`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::FutureExt;

use crate::admission::{self, Webhook};
use crate::catalog::Catalog;
use crate::config::{self, Config, ConfigStore};
use crate::metrics::Metrics;
use crate::policy::{self, PolicySet, store::PolicyStore};
use crate::provision;
use crate::server::{self, AppState, ServeOptions};
use crate::tls::{self, CertStore};

/// Catalog and configuration that `serve --dev` uses when no cluster is reachable.
const DEV_CATALOG: &str = "manifests/examples";
const DEV_CONFIG: &str = "manifests/examples/dev/bucketgate-config.yaml";
const DEV_POLICIES: &str = "policies";

#[derive(Parser, Debug)]
#[command(name = "bucketgate", version, about = "Admission and provisioning for Kubernetes object-storage buckets")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "BUCKETGATE_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTPS admission server.
    Serve(Box<ServeArgs>),
    /// Generate a CA and a serving certificate, and print the caBundle.
    Certs(CertsArgs),
    /// Print the CustomResourceDefinitions, or write them into a directory.
    Crds(CrdsArgs),
    /// Answer one AdmissionReview from a file, offline, and print the response review.
    Review(ReviewArgs),
    /// Check and test policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Check configuration files before they reach a cluster.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check configuration files, or manifests holding the bucketgate-config ConfigMap, and
    /// say what each serves.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Check syntax, JSONPath expressions, regular expressions and unknown fields.
    Lint {
        /// Policy directories.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// Run the `*.test.yaml` suites beside the policies.
    Test {
        dir: PathBuf,
        /// Also write the results as JUnit XML here.
        #[arg(long)]
        junit: Option<PathBuf>,
    },
    /// Judge the objects a cluster holds now against policies, as their next update and as
    /// their creation today; fails when a policy in enforce mode refuses one.
    Audit(AuditArgs),
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Policy directories.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Judge the objects in this directory of YAML instead of the cluster's (kubeconfig).
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// The namespace of --catalog's Buckets that name none, as `kubectl apply -n` or
    /// kustomize's `namespace:` would set it.
    #[arg(long, short = 'n', requires = "catalog")]
    pub namespace: Option<String>,
    /// The provisioners the built-in rules take as served (--config, --provisioner);
    /// without either, every provisioner a BucketClass or BucketContent names.
    #[command(flatten)]
    pub served: Served,
    /// The user the writes are judged as, for policies that select users.
    #[arg(long, default_value = policy::audit::AUDITOR)]
    pub user: String,
    /// A group of that user; repeat for several.
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    #[arg(long, value_enum, default_value_t = AuditOutput::Text)]
    pub output: AuditOutput,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditOutput {
    /// A line for each finding, then a summary.
    Text,
    /// The report as one JSON document.
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct Served {
    /// YAML configuration file (see README: Configuration).
    #[arg(long, env = "BUCKETGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// A provisioner this deployment serves; repeat for several. Adds to --config.
    #[arg(long = "provisioner", value_name = "NAME")]
    pub provisioners: Vec<String>,
}

impl Served {
    /// The configuration file, or `fallback` where there is none and it exists, with the
    /// `--provisioner` flags added.
    fn open(&self, fallback: Option<&Path>) -> anyhow::Result<Arc<ConfigStore>> {
        let path = match (&self.config, fallback) {
            (Some(path), _) => Some(path.clone()),
            (None, Some(path)) if path.exists() => Some(path.to_path_buf()),
            _ => None,
        };
        Ok(ConfigStore::open(path, self.provisioners.clone())?)
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8443", env = "BUCKETGATE_LISTEN")]
    pub listen: SocketAddr,
    /// Directory holding tls.crt and tls.key (a kubernetes.io/tls Secret mount).
    #[arg(long, default_value = "certs", env = "BUCKETGATE_CERT_DIR")]
    pub cert_dir: PathBuf,
    /// How often to look for a new certificate.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub cert_reload_interval: Duration,
    /// Read the catalog from this directory of YAML instead of watching the cluster.
    #[arg(long, env = "BUCKETGATE_CATALOG")]
    pub catalog: Option<PathBuf>,
    #[command(flatten)]
    pub served: Served,
    /// A directory of policy files (a mounted ConfigMap); repeat for several.
    #[arg(long = "policies", value_name = "DIR", env = "BUCKETGATE_POLICIES", value_delimiter = ',')]
    pub policy_dirs: Vec<PathBuf>,
    /// How often to look for changed policy files.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub policy_reload_interval: Duration,
    /// How often the cluster's objects are judged against the policies (and within seconds
    /// of a new policy set), for `GET /policies` and the metrics; 0 turns it off.
    #[arg(long, default_value = "1h", value_parser = off_or_at_least_a_second)]
    pub policy_audit_interval: Duration,
    /// How often to look for a changed configuration file.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub config_reload_interval: Duration,
    /// Namespace of the Lease that elects the replica running the provisioning loop.
    #[arg(long, env = "POD_NAMESPACE", default_value = "bucketgate-system")]
    pub lease_namespace: String,
    /// This replica's name in the Lease.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Reconciles the provisioning loop runs at once for each provisioner (0: no bound).
    #[arg(long, default_value_t = 32, env = "BUCKETGATE_MAX_CONCURRENT_RECONCILES")]
    pub max_concurrent_reconciles: u16,
    /// How often the provisioning loop looks at a bound Bucket when nothing changed (to one
    /// and a half times it, spread over the Buckets), and asks its store whether the bucket
    /// is still there and has what its class asked: at least 1s.
    #[arg(long, default_value = "1h", env = "BUCKETGATE_RECHECK_INTERVAL", value_parser = at_least_a_second)]
    pub recheck_interval: Duration,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = server::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Time in-flight requests get to finish after SIGTERM.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Make the serving certificate and its CA, renew them, and keep the webhooks' caBundle
    /// current, in the Secret --tls-secret of bucketgate's namespace (--lease-namespace),
    /// which the pods mount at --cert-dir; the server waits for the certificate to appear.
    #[arg(long)]
    pub manage_certs: bool,
    /// The Secret --manage-certs keeps the CA, its key and the certificate in.
    #[arg(long, default_value = tls::rotation::SECRET)]
    pub tls_secret: String,
    /// The webhook configurations, mutating and validating, whose caBundle --manage-certs keeps.
    #[arg(long, default_value = tls::rotation::WEBHOOK_CONFIGURATION)]
    pub webhook_configuration: String,
    /// The Service the API server calls the webhooks through: the certificate's names.
    #[arg(long, default_value = tls::rotation::SERVICE)]
    pub service: String,
    /// Another DNS name for the certificate --manage-certs makes (webhooks called by URL);
    /// repeat for several.
    #[arg(long = "cert-dns-name", value_name = "NAME")]
    pub cert_dns_names: Vec<String>,
    /// How often --manage-certs looks at the Secret and the caBundles.
    #[arg(long, default_value = "1m", value_parser = at_least_a_second)]
    pub manage_certs_interval: Duration,
    /// Development mode: create certificates in --cert-dir when there are none, load the
    /// example policies in policies/ when no --policies is given, and use the example catalog
    /// and configuration when no cluster is reachable.
    #[arg(long)]
    pub dev: bool,
}

/// `--recheck-interval` and `--manage-certs-interval`: a duration of at least a second.
/// Every bound Bucket costs two or three reads of the API server and a request to its store
/// an interval, and every replica three reads a look at its certificate; under a second
/// either would be a loop against the API server, not a look now and then.
fn at_least_a_second(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if interval < Duration::from_secs(1) {
        return Err(format!("{text} is under a second"));
    }
    Ok(interval)
}

/// `--policy-audit-interval`: 0 (off), or at least a second, for the reason above.
fn off_or_at_least_a_second(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(Duration::ZERO) => Ok(Duration::ZERO),
        _ => at_least_a_second(text),
    }
}

#[derive(Args, Debug)]
pub struct CertsArgs {
    /// Directory to write ca.crt, tls.crt and tls.key into.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// DNS names for the serving certificate; repeat for several.
    #[arg(long = "dns", value_name = "NAME", default_values_t = [
        "bucketgate.bucketgate-system.svc".to_string(),
        "bucketgate.bucketgate-system.svc.cluster.local".to_string(),
        "localhost".to_string(),
    ])]
    pub dns_names: Vec<String>,
    /// IP addresses for the serving certificate; repeat for several.
    #[arg(long = "ip", value_name = "ADDRESS", default_values_t = ["127.0.0.1".parse::<IpAddr>().unwrap()])]
    pub ips: Vec<IpAddr>,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    pub days: i64,
}

#[derive(Args, Debug)]
pub struct CrdsArgs {
    /// Write one file per CRD and a kustomization.yaml here instead of printing.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ReviewArgs {
    /// AdmissionReview JSON file.
    pub file: PathBuf,
    /// Directory of YAML with the BucketClasses, BucketContents and Namespaces to decide
    /// against; without it, the cluster's (kubeconfig), listed once.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    #[command(flatten)]
    pub served: Served,
    /// Policy directories to apply on top of the built-in rules.
    #[arg(long = "policies", value_name = "DIR")]
    pub policy_dirs: Vec<PathBuf>,
    /// Which webhook answers. Taken from the file name (`...-mutate-...`) when omitted.
    #[arg(long, value_enum)]
    pub webhook: Option<WebhookArg>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum WebhookArg {
    Mutate,
    Validate,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Certs(args) => {
            let generated = tls::generate(&args.dns_names, &args.ips, args.days)?;
            generated.write(&args.out)?;
            let until = jiff::Timestamp::from_second(generated.expires).map(|t| t.to_string()).unwrap_or_default();
            eprintln!(
                "wrote {dir}/ca.crt, {dir}/tls.crt and {dir}/tls.key for {}, valid until {until}; caBundle follows",
                args.dns_names.join(", "),
                dir = args.out.display()
            );
            println!("{}", generated.ca_bundle());
            Ok(())
        }
        Command::Crds(args) => {
            match args.out {
                Some(dir) => {
                    for path in crate::crds::write_dir(&dir).with_context(|| format!("writing {}", dir.display()))? {
                        eprintln!("wrote {}", path.display());
                    }
                }
                None => print!("{}", crate::crds::stream()),
            }
            Ok(())
        }
        Command::Review(args) => review(args).await,
        Command::Policy(PolicyCommand::Lint { dirs }) => lint(&dirs),
        Command::Policy(PolicyCommand::Test { dir, junit }) => policy_test(&dir, junit.as_deref()),
        Command::Policy(PolicyCommand::Audit(args)) => audit(args).await,
        Command::Config(ConfigCommand::Check { files }) => config_check(&files),
    }
}

/// A running bucketgate ignores an edit that does not load; this says so before it is
/// applied, and what a good one serves.
fn config_check(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut failed = 0;
    for file in files {
        // A file that cannot be read counts as a problem, and the others are still checked.
        let found = configurations(file).unwrap_or_else(|error| vec![(file.display().to_string(), Err(error))]);
        for (shown, loaded) in found {
            match loaded {
                Ok(config) => println!("{shown}: OK, {}", describe(&config)),
                Err(error) => {
                    failed += 1;
                    println!("{error:#}");
                }
            }
        }
    }
    if failed > 0 {
        bail!("{failed} configuration(s) do not load");
    }
    Ok(())
}

/// The configurations in `file` (see [`config::texts_in`]), each parsed.
fn configurations(file: &Path) -> anyhow::Result<Vec<(String, anyhow::Result<Config>)>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let texts = config::texts_in(&text, &file.display().to_string()).map_err(anyhow::Error::msg)?;
    Ok(texts
        .into_iter()
        .map(|(shown, text)| {
            let loaded = Config::parse(&text, &shown).map_err(anyhow::Error::from);
            (shown, loaded)
        })
        .collect())
}

fn describe(config: &Config) -> String {
    if config.provisioners.is_empty() {
        return "serves no provisioner: Buckets of every class will be refused".into();
    }
    let each: Vec<String> = config
        .provisioners
        .iter()
        .map(|provisioner| match &provisioner.s3 {
            Some(s3) => format!(
                "{} (S3 driver at {}, region {}{})",
                provisioner.name,
                s3.endpoint,
                s3.region,
                if s3.iam.is_some() {
                    ", a user and key per Bucket"
                } else {
                    ", the provisioner's key for every Bucket"
                }
            ),
            None => format!("{} (admission only: another controller provisions)", provisioner.name),
        })
        .collect();
    format!("serves {}", each.join("; "))
}

fn lint(dirs: &[PathBuf]) -> anyhow::Result<()> {
    let mut errors = Vec::new();
    let count = match policy::load::load(dirs) {
        Ok(set) => {
            // Said, not counted: the set loads and runs as written.
            for warning in set.policies.iter().flat_map(policy::Policy::warnings) {
                println!("{warning}");
            }
            set.policies.len()
        }
        Err(found) => {
            errors.extend(found);
            0
        }
    };
    match policy::load::read_files(dirs, true) {
        Ok(files) => {
            errors.extend(files.iter().filter_map(|(path, text)| policy::testing::parse_suites(path, text).err()))
        }
        Err(found) => errors.extend(found),
    }
    // A directory that cannot be read fails both readings above: said once.
    let mut said = std::collections::HashSet::new();
    errors.retain(|error| said.insert(error.to_string()));
    for error in &errors {
        println!("{error}");
    }
    if !errors.is_empty() {
        bail!("{} problem(s) in the policy files", errors.len());
    }
    println!("{count} policies OK");
    Ok(())
}

fn policy_test(dir: &Path, junit: Option<&Path>) -> anyhow::Result<()> {
    let results = match policy::testing::run_dir(dir) {
        Ok(results) => results,
        Err(errors) => {
            for error in &errors {
                println!("{error}");
            }
            bail!("the policies or their tests do not load");
        }
    };
    print!("{}", policy::testing::table(&results));
    if let Some(path) = junit {
        let xml = policy::testing::junit(&results).map_err(anyhow::Error::msg)?;
        std::fs::write(path, xml).with_context(|| format!("writing {}", path.display()))?;
    }
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    if results.is_empty() {
        bail!("no test cases found in {}", dir.display());
    }
    if failed > 0 {
        bail!("{failed} policy test(s) failed");
    }
    Ok(())
}

async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let policies = load_policies(&args.dirs)?;
    let mut documents = match &args.catalog {
        Some(dir) => Catalog::documents_in(dir)?,
        None => cluster_documents("judge").await?,
    };
    let unplaced: Vec<&mut serde_json::Value> = documents
        .iter_mut()
        .map(|(_, doc)| doc)
        .filter(|doc| doc["kind"] == "Bucket" && doc.pointer("/metadata/namespace").is_none_or(|n| n.is_null()))
        .collect();
    match &args.namespace {
        Some(namespace) => {
            unplaced.into_iter().for_each(|doc| doc["metadata"]["namespace"] = namespace.as_str().into())
        }
        None if !unplaced.is_empty() => eprintln!(
            "{} Bucket(s) name no namespace and are judged in none: pass --namespace NS as kubectl apply -n, \
             or kustomize's namespace:, would set it",
            unplaced.len()
        ),
        None => {}
    }
    let catalog = Catalog::from_documents(documents.iter().cloned())?;
    let config = if args.served.config.is_none() && args.served.provisioners.is_empty() {
        // The question is the policies, not this deployment's provisioners.
        let (classes, contents) = (catalog.classes(), catalog.contents_store().state());
        let named = classes.iter().map(|c| c.spec.provisioner()).chain(contents.iter().map(|c| c.spec.provisioner()));
        Arc::new(Config::default().with_provisioners(named.filter(|name| !name.is_empty()).map(String::from)))
    } else {
        args.served.open(None)?.current()
    };
    let ctx = admission::Context { catalog: &catalog, config: &config, policies: &policies };
    let objects: Vec<serde_json::Value> = documents.into_iter().map(|(_, doc)| doc).collect();
    let writer = policy::audit::Writer { username: args.user, groups: args.groups };
    let report = policy::audit::audit(&ctx, &objects, &writer);
    match args.output {
        AuditOutput::Text => {
            for finding in &report.findings {
                println!("{finding}");
            }
            println!("{}", report.summary(policies.policies.len()));
        }
        AuditOutput::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    let refused = report.refused_by_policies();
    if refused > 0 {
        bail!("{refused} object(s) refused by policies in enforce mode");
    }
    Ok(())
}

/// The policies of `dirs` for a command that judges with them, or every problem with
/// them, each with its file and line.
fn load_policies(dirs: &[PathBuf]) -> anyhow::Result<PolicySet> {
    policy::load::load(dirs).map_err(|errors| {
        anyhow::anyhow!(errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))
            .context("the policies do not load")
    })
}

/// The cluster's objects, listed once, for the commands that read them rather than watch:
/// what they are for (`to`) says in the error where there is no cluster.
async fn cluster_documents(to: &str) -> anyhow::Result<Vec<(PathBuf, serde_json::Value)>> {
    let client = cluster_client(true).await.with_context(|| {
        format!("no cluster to {to}: set KUBECONFIG, or pass --catalog DIR to read a directory of YAML")
    })?;
    let listed = Catalog::list_documents(&client).await.context("listing the cluster's objects")?;
    Ok(listed.into_iter().map(|doc| (PathBuf::from("the cluster"), doc)).collect())
}

async fn review(args: ReviewArgs) -> anyhow::Result<()> {
    let webhook = match args.webhook {
        Some(WebhookArg::Mutate) => Webhook::Mutate,
        Some(WebhookArg::Validate) => Webhook::Validate,
        None => {
            let name = args.file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            match (name.contains("mutate"), name.contains("validate")) {
                (true, false) => Webhook::Mutate,
                (false, true) => Webhook::Validate,
                _ => bail!(
                    "cannot tell from {name:?} which webhook answers: pass --webhook mutate or --webhook validate"
                ),
            }
        }
    };
    let body = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let request = admission::decode(&body).with_context(|| format!("{}", args.file.display()))?;
    let catalog = match &args.catalog {
        Some(dir) => Catalog::load_dir(dir)?,
        None => Catalog::from_documents(cluster_documents("decide against").await?)?,
    };
    let config = args.served.open(None)?.current();
    let policies = if args.policy_dirs.is_empty() { PolicySet::default() } else { load_policies(&args.policy_dirs)? };
    let ctx = admission::Context { catalog: &catalog, config: &config, policies: &policies };
    let response = admission::review(webhook, &request, &ctx).response;
    let review: serde_json::Value = serde_json::from_slice(&admission::encode(&response)?)?;
    println!("{}", serde_json::to_string_pretty(&review)?);
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.dev && tls::dev_certs_needed(&args.cert_dir) {
        let generated = tls::generate(&["localhost".into()], &["127.0.0.1".parse()?], 30)?;
        generated.write(&args.cert_dir)?;
        tracing::info!(dir = %args.cert_dir.display(), "development certificates created; clients trust ca.crt");
    }
    tls::check_dns_names(&args.cert_dns_names)?;
    let certs = if args.manage_certs {
        CertStore::open_or_wait(&args.cert_dir)
    } else {
        CertStore::open(&args.cert_dir)
            .with_context(|| format!("loading the serving certificate from {}", args.cert_dir.display()))?
    };

    let (catalog, dev_fallback, client) = match &args.catalog {
        Some(dir) => (Catalog::load_dir(dir)?, false, None),
        None => match cluster_client(args.dev).await {
            Ok(client) => {
                let (catalog, watches) = Catalog::watch(client.clone());
                tokio::spawn(watches);
                (catalog, false, Some(client))
            }
            Err(error) if args.dev => {
                tracing::warn!(%error, catalog = DEV_CATALOG, "no cluster reachable; serving the example catalog");
                (Catalog::load_dir(Path::new(DEV_CATALOG))?, true, None)
            }
            Err(error) => return Err(error.context("connecting to the cluster (use --catalog DIR to run without one)")),
        },
    };
    let metrics = Arc::new(Metrics::default());
    if args.manage_certs {
        let Some(client) = &client else {
            anyhow::bail!(
                "--manage-certs keeps the certificate in a Secret of the cluster, and no cluster is read here \
                 (--catalog, or --dev without one reachable)"
            );
        };
        let managed = tls::rotation::Managed {
            names: tls::rotation::Managed::service_names(&args.service, &args.lease_namespace)
                .into_iter()
                .chain(args.cert_dns_names.iter().cloned())
                .collect(),
            namespace: args.lease_namespace.clone(),
            secret: args.tls_secret.clone(),
            webhook_configuration: args.webhook_configuration.clone(),
            interval: args.manage_certs_interval,
        };
        tokio::spawn(tls::rotation::manage(client.clone(), managed, metrics.clone()));
    }
    let config = args.served.open(dev_fallback.then_some(Path::new(DEV_CONFIG)))?;
    config.current().announce("serving provisioners");

    // Both the server and the provisioning loop stop on it.
    let shutdown = shutdown_signal().boxed().shared();
    let mut provisioning = None;
    let api = client.clone();
    // The provisioning loop needs the cluster, and runs while the configuration has a driver.
    if let Some(client) = client {
        let identity = args.identity.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "bucketgate".into())
        });
        let replica = provision::Replica {
            lease_namespace: args.lease_namespace.clone(),
            identity,
            max_concurrent_reconciles: args.max_concurrent_reconciles,
            recheck_interval: args.recheck_interval,
        };
        let (configs, metrics, stop, catalog) =
            (config.subscribe(), metrics.clone(), shutdown.clone(), catalog.clone());
        provisioning = Some(tokio::spawn(async move {
            if let Err(error) = provision::supervise(client, catalog, configs, replica, metrics, stop).await {
                tracing::error!(error = %format!("{error:#}"), "the provisioning loop stopped");
            }
        }));
    }

    let mut policy_dirs = args.policy_dirs.clone();
    if args.dev && policy_dirs.is_empty() && Path::new(DEV_POLICIES).is_dir() {
        policy_dirs.push(DEV_POLICIES.into());
    }
    let policies = PolicyStore::new(policy_dirs);
    let load = policies.state();
    for error in &load.errors {
        tracing::error!(file = %error.file.display(), line = error.line, problem = %error.message, "policy not loaded");
    }
    tracing::info!(policies = ?policies.current().names(), loaded = load.loaded, "policies");

    tokio::spawn(certs.clone().watch(args.cert_reload_interval, metrics.clone()));
    tokio::spawn(policies.clone().watch(args.policy_reload_interval, metrics.clone()));
    tokio::spawn(config.clone().watch(args.config_reload_interval, metrics.clone()));
    let audit = Arc::new(policy::audit::LastAudit::default());
    if let Some(client) = &api
        && !args.policy_audit_interval.is_zero()
    {
        let interval = args.policy_audit_interval;
        let (catalog, policies, config) = (catalog.clone(), policies.clone(), config.clone());
        let (metrics, last) = (metrics.clone(), audit.clone());
        tokio::spawn(policy::audit::keep(client.clone(), catalog, policies, config, interval, metrics, last));
    }
    let state = Arc::new(AppState {
        catalog,
        api,
        config,
        policies,
        audit,
        metrics,
        certs,
        shutting_down: AtomicBool::new(false),
    });
    let listener = std::net::TcpListener::bind(args.listen).with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, "serving admission over HTTPS");
    let options = ServeOptions { max_body_bytes: args.max_body_bytes, shutdown_grace: args.shutdown_grace };
    let served = server::serve(listener, state, options, shutdown).await;
    // The loop released its Lease when the signal came; this waits for that call to the API
    // server, briefly, should it still be under way.
    if let Some(provisioning) = provisioning
        && tokio::time::timeout(Duration::from_secs(5), provisioning).await.is_err()
    {
        tracing::warn!("the provisioning Lease was not released within 5s; another replica takes over when it expires");
    }
    served
}

/// A client for the cluster in the kubeconfig or the pod's service account. In development
/// mode the API server must also answer quickly, so that a stale kubeconfig falls back to
/// the example catalog instead of hanging.
async fn cluster_client(probe: bool) -> anyhow::Result<kube::Client> {
    let client = kube::Client::try_default().await.context("no Kubernetes configuration")?;
    if probe {
        tokio::time::timeout(Duration::from_secs(3), client.apiserver_version())
            .await
            .context("the API server did not answer within 3s")?
            .context("the API server refused")?;
    }
    Ok(client)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
