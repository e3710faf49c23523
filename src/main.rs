use std::process::ExitCode;

use bucketgate::cli::{Cli, LogFormat};
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Log lines are written in batches by a thread of their own (see logs.rs for why).
    let (writer, flush) = match bucketgate::logs::batched(std::io::stderr()) {
        Ok(logs) => logs,
        Err(error) => {
            eprintln!("error: cannot start the log writer thread: {error}");
            return ExitCode::FAILURE;
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match cli.log_format {
        LogFormat::Json => logs
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(bucketgate::logs::JsonLines::default())
            .init(),
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
