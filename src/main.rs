use std::process::ExitCode;

use bucketgate::cli::{Cli, LogFormat};
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Log lines are written by a thread of their own, as many per write as are waiting:
    // a write to stderr per admission review cost the webhook a fifth of its throughput.
    // Not lossy: should the queue fill, callers wait rather than lines being dropped.
    let (writer, flush) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("bucketgate-logs")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
    let result = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(bucketgate::cli::run(cli)),
        Err(error) => Err(anyhow::anyhow!("cannot start the async runtime: {error}")),
    };
    // Every log line out before the last word.
    drop(flush);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
