//! Polling files for changes. Certificates and policies both come from mounted Secrets and
//! ConfigMaps, which change by a swapped `..data` link as well as by rewritten files;
//! reading them again on a timer sees every kind of update.

use std::time::Duration;

/// Runs `reload` on the blocking pool every `interval`, forever, and hands each outcome to
/// `report`. A reload that panics is logged and the next one runs on time.
pub async fn every<T, R, F>(interval: Duration, what: &'static str, reload: R, mut report: F)
where
    T: Send + 'static,
    R: Fn() -> T + Clone + Send + 'static,
    F: FnMut(T),
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match tokio::task::spawn_blocking(reload.clone()).await {
            Ok(outcome) => report(outcome),
            Err(error) => tracing::error!(%error, what, "reload task failed"),
        }
    }
}
