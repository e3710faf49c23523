//! Polling files for changes. Certificates and policies both come from mounted Secrets and
//! ConfigMaps, which change by a swapped `..data` link as well as by rewritten files;
//! reading them again on a timer sees every kind of update.

use std::sync::Mutex;
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

/// What a store last read of its files, so that files as they were are not loaded again,
/// nor broken ones reported again at every poll.
#[derive(Default)]
pub struct LastRead<T>(Mutex<Option<T>>);

impl<T: PartialEq + Clone> LastRead<T> {
    pub fn new(read: Option<T>) -> Self {
        LastRead(Mutex::new(read))
    }

    /// Whether `read` differs from what was read last; it is remembered either way.
    pub fn is_new(&self, read: &T) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_ref() == Some(read) {
            return false;
        }
        *last = Some(read.clone());
        true
    }

    /// After the files could not be read: whatever is read next is new, even what was read
    /// before, so that files back as they were load again and say so.
    pub fn forget(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}
