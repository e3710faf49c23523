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
/// nor files that are broken, or cannot be read, in the same way reported again at every
/// poll.
pub struct LastRead<T>(Mutex<Option<Seen<T>>>);

enum Seen<T> {
    Read(T),
    /// The files could not be read, for this reason.
    Unreadable(String),
}

impl<T: PartialEq + Clone> LastRead<T> {
    pub fn new(read: Option<T>) -> Self {
        LastRead(Mutex::new(read.map(Seen::Read)))
    }

    /// Whether `read` differs from what was read last; it is remembered either way. After
    /// files that could not be read, anything read is new, even what was read before, so
    /// that files back as they were load again and say so.
    pub fn is_new(&self, read: &T) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(&*last, Some(Seen::Read(before)) if before == read) {
            return false;
        }
        *last = Some(Seen::Read(read.clone()));
        true
    }

    /// Whether the files failing to be read for `why` is news: not when the last look
    /// failed for the same reason. Remembered either way.
    pub fn is_new_failure(&self, why: String) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(&*last, Some(Seen::Unreadable(before)) if *before == why) {
            return false;
        }
        *last = Some(Seen::Unreadable(why));
        true
    }
}

impl<T> Default for LastRead<T> {
    fn default() -> Self {
        LastRead(Mutex::new(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_news_once_and_what_follows_it_always() {
        let seen = LastRead::new(Some("a"));
        assert!(!seen.is_new(&"a"));
        assert!(seen.is_new_failure("gone".into()));
        assert!(!seen.is_new_failure("gone".into()), "the same failure again");
        assert!(seen.is_new_failure("no permission".into()), "another failure");
        assert!(seen.is_new(&"a"), "back as it was");
        assert!(!seen.is_new(&"a"));
        assert!(seen.is_new_failure("gone".into()), "failing again after a read");
    }
}
