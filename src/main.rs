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
            eprintln!("error: {}", chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, as `{:#}` writes them, but for a cause that the
/// message before it already says: most of bucketgate's errors name their cause in their
/// own words, and it would otherwise be printed twice.
fn chain(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1).map(ToString::to_string) {
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}
