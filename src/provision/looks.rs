//! When the loop asks a store whether a bound Bucket's bucket is still there.
//!
//! A Bound BucketContent records that its bucket was made, and nothing tells the loop when
//! it goes: deleted from a console or by a script, or lost with a store restored from an
//! older backup. Its Buckets would go on showing `Ready` while every workload call failed.
//! So the loop asks the store (one HEAD) at a bound Bucket's timed looks, about once an
//! hour unless configured, not at every look: most looks come from watch events, a burst of
//! them around each Bucket's creation.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::ProvisionerLabel;

/// How soon a Bucket whose bucket is missing is looked at again: a bucket put back at the
/// store is seen within minutes, or at the next timed look where those come sooner.
pub fn while_missing(recheck_interval: Duration) -> Duration {
    Duration::from_secs(5 * 60).min(recheck_interval)
}

/// When each Bucket's bucket was last asked about, and which were missing, by the
/// Bucket's uid.
pub struct StoreLooks {
    every: Duration,
    last: Mutex<HashMap<String, Instant>>,
    /// The provisioner of each Bucket whose bucket was missing at its last look.
    missing: Mutex<HashMap<String, String>>,
    /// How many of those each provisioner has, for an alert: Events pass, and a Bucket's
    /// condition is seen only by whoever looks at it.
    gauge: Family<ProvisionerLabel, Gauge>,
}

impl StoreLooks {
    pub fn new(every: Duration, gauge: Family<ProvisionerLabel, Gauge>) -> StoreLooks {
        StoreLooks { every, last: Mutex::default(), missing: Mutex::default(), gauge }
    }

    /// Asks at each timed look of a Bucket looked at every `recheck_interval` and up to half
    /// of it more ([`super::plan::recheck_after`]), and not at the looks watch events bring
    /// between two: a little less than the interval (55 minutes for the hour).
    pub fn at_timed_looks(recheck_interval: Duration, gauge: Family<ProvisionerLabel, Gauge>) -> StoreLooks {
        StoreLooks::new(recheck_interval - recheck_interval / 12, gauge)
    }

    /// Whether to ask the store now about the bucket of the Bucket `uid`. A Bucket seen for
    /// the first time starts the clock instead: a replica that starts leading looks at
    /// every Bucket at once, and asking each one's store then would add a request to the
    /// store, and a read of its provisioner's Secret, for every Bucket in the cluster.
    /// A Bucket that reports its bucket missing is asked about at every look.
    pub fn due(&self, uid: &str, reports_missing: bool, now: Instant) -> bool {
        if reports_missing {
            return true;
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match last.get(uid) {
            Some(at) => now.saturating_duration_since(*at) >= self.every,
            None => {
                last.insert(uid.to_string(), now);
                false
            }
        }
    }

    /// The store of `provisioner` answered at `now` whether it has the bucket of the Bucket
    /// `uid`.
    pub fn looked(&self, uid: &str, provisioner: &str, there: bool, now: Instant) {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).insert(uid.to_string(), now);
        let mut missing = self.missing.lock().unwrap_or_else(|e| e.into_inner());
        let before = match there {
            true => missing.remove(uid),
            false => missing.insert(uid.to_string(), provisioner.to_string()),
        };
        self.count(&missing, before.as_deref().into_iter().chain([provisioner]));
    }

    /// The Bucket `uid` is gone: nothing to remember of it.
    pub fn forget(&self, uid: &str) {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
        let mut missing = self.missing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(provisioner) = missing.remove(uid) {
            self.count(&missing, [provisioner.as_str()]);
        }
    }

    /// This replica stopped leading: what it found is the next leader's to say.
    pub fn clear(&self) {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let mut missing = self.missing.lock().unwrap_or_else(|e| e.into_inner());
        let provisioners: Vec<String> = missing.drain().map(|(_, p)| p).collect();
        self.count(&missing, provisioners.iter().map(String::as_str));
    }

    /// Sets the gauge of each of `provisioners` from `missing`.
    fn count<'a>(&self, missing: &HashMap<String, String>, provisioners: impl IntoIterator<Item = &'a str>) {
        for provisioner in provisioners {
            let n = missing.values().filter(|p| *p == provisioner).count();
            let label = ProvisionerLabel { provisioner: provisioner.to_string() };
            self.gauge.get_or_create(&label).set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// For the hour between timed looks that bucketgate waits unless configured.
    const EVERY: Duration = Duration::from_secs(55 * 60);

    fn looks() -> StoreLooks {
        StoreLooks::at_timed_looks(super::super::plan::RECHECK_INTERVAL, Family::default())
    }

    #[test]
    fn every_timed_look_asks_and_a_missing_bucket_is_looked_at_within_minutes() {
        for interval in [1, 2, 60, 3600, 86400].map(Duration::from_secs) {
            let looks = StoreLooks::at_timed_looks(interval, Family::default());
            assert!(looks.every < interval && looks.every >= interval * 9 / 10, "{interval:?}: {:?}", looks.every);
        }
        assert_eq!(while_missing(Duration::from_secs(3600)), Duration::from_secs(300));
        assert_eq!(while_missing(Duration::from_secs(2)), Duration::from_secs(2), "no later than a timed look");
    }

    fn missing(looks: &StoreLooks, provisioner: &str) -> i64 {
        looks.gauge.get_or_create(&ProvisionerLabel { provisioner: provisioner.into() }).get()
    }

    #[test]
    fn a_bucket_is_asked_about_once_an_interval_from_its_first_sight() {
        let looks = looks();
        let start = Instant::now();
        assert!(!looks.due("a", false, start), "first sight starts the clock");
        assert!(!looks.due("a", false, start + EVERY - Duration::from_secs(1)));
        assert!(looks.due("a", false, start + EVERY));
        // Due until the store answers: a look whose question failed asks again.
        assert!(looks.due("a", false, start + EVERY + Duration::from_secs(1)));
        looks.looked("a", "s3", true, start + EVERY);
        assert!(!looks.due("a", false, start + EVERY + Duration::from_secs(60)));
        assert!(looks.due("a", false, start + EVERY * 2));
        // Each Bucket has its own clock.
        assert!(!looks.due("b", false, start + EVERY * 2));
    }

    #[test]
    fn a_bucket_reported_missing_is_asked_about_at_every_look() {
        let looks = looks();
        let start = Instant::now();
        assert!(looks.due("a", true, start), "even at first sight");
        looks.looked("a", "s3", false, start);
        assert!(looks.due("a", true, start));
    }

    #[test]
    fn each_provisioner_counts_its_missing_buckets_until_found_forgotten_or_no_longer_led() {
        let looks = looks();
        let now = Instant::now();
        looks.looked("a", "s3", false, now);
        looks.looked("b", "s3", false, now);
        looks.looked("c", "ceph", false, now);
        looks.looked("d", "ceph", true, now);
        assert_eq!((missing(&looks, "s3"), missing(&looks, "ceph")), (2, 1));
        looks.looked("a", "s3", false, now);
        assert_eq!(missing(&looks, "s3"), 2, "the same Bucket counts once");
        looks.looked("a", "s3", true, now);
        assert_eq!(missing(&looks, "s3"), 1, "found");
        looks.forget("b");
        assert_eq!(missing(&looks, "s3"), 0, "deleted");
        looks.clear();
        assert_eq!(missing(&looks, "ceph"), 0, "another replica leads");
        assert!(!looks.due("c", false, now + EVERY * 2), "seen afresh");
    }

    #[test]
    fn a_forgotten_bucket_starts_again_from_its_next_sight() {
        let looks = looks();
        let start = Instant::now();
        looks.looked("a", "s3", true, start);
        looks.forget("a");
        assert!(!looks.due("a", false, start + EVERY * 3));
        assert!(looks.last.lock().unwrap().len() == 1);
        looks.forget("a");
        assert!(looks.last.lock().unwrap().is_empty());
    }
}
