//! Turns: no more than a bound of some work at once, and gauges that show how many are
//! taken and how many wait. The S3 driver takes them at a store's IAM API, the provisioning
//! loop for each provisioner's reconciles.

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;

pub struct Turns {
    permits: Arc<Semaphore>,
    in_flight: Gauge,
    waiting: Gauge,
}

impl Turns {
    /// Turns from `permits`, counted on the gauges `gauge` gives for each state, as their
    /// metrics label it: `in_flight` and `waiting`. Owned gauges: `Family::get_or_create`
    /// hands out a guard on the family, and making the second gauge while the first's guard
    /// lived would wait on it for ever.
    pub fn new(permits: Arc<Semaphore>, gauge: impl Fn(&'static str) -> Gauge) -> Turns {
        Turns { permits, in_flight: gauge("in_flight"), waiting: gauge("waiting") }
    }

    /// Runs `work` once a turn is free.
    pub async fn take<T>(&self, work: impl Future<Output = T>) -> T {
        let _permit = {
            // Counted down on drop: work dropped while it waits no longer waits.
            let _waiting = Counted::new(&self.waiting);
            // The semaphore is never closed: acquiring fails only then.
            self.permits.acquire().await
        };
        // Dropped before the permit (locals drop in reverse): never more than the bound.
        let _in_flight = Counted::new(&self.in_flight);
        work.await
    }
}

/// One more on a gauge for as long as it lives.
struct Counted<'a>(&'a Gauge);

impl<'a> Counted<'a> {
    fn new(gauge: &'a Gauge) -> Counted<'a> {
        gauge.inc();
        Counted(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the gauges show: the turns taken and the work waiting, including work given
    /// up while it waited.
    #[tokio::test]
    async fn turns_are_counted_while_taken_and_while_waited_for() {
        let turns = Arc::new(Turns::new(Arc::new(Semaphore::new(1)), |_| Gauge::default()));
        let counts = || (turns.in_flight.get(), turns.waiting.get());
        let (answer_first, first_answered) = tokio::sync::oneshot::channel::<()>();
        let request = |answered: tokio::sync::oneshot::Receiver<()>| {
            let turns = turns.clone();
            tokio::spawn(async move { turns.take(answered).await.is_ok() })
        };
        let first = request(first_answered);
        let (_answer_second, second_answered) = tokio::sync::oneshot::channel::<()>();
        let second = request(second_answered);
        let (answer_third, third_answered) = tokio::sync::oneshot::channel::<()>();
        let third = request(third_answered);
        let settled = |expected: (i64, i64)| async move {
            for _ in 0..100 {
                if counts() == expected {
                    return;
                }
                tokio::task::yield_now().await;
            }
            panic!("in flight and waiting: {:?}, not {expected:?}", counts());
        };
        settled((1, 2)).await;
        second.abort();
        settled((1, 1)).await;
        answer_first.send(()).unwrap();
        assert!(first.await.unwrap());
        settled((1, 0)).await;
        answer_third.send(()).unwrap();
        assert!(third.await.unwrap());
        assert_eq!(counts(), (0, 0));
    }
}
