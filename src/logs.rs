//! Log lines: formatted as JSON in one buffer ([`JsonLines`]), gathered in memory and
//! written to stderr by a thread of their own, a batch at a time ([`batched`]).
//!
//! A refused review is logged at info. Handing each line to a writer thread as it is
//! made (tracing-appender's non-blocking writer) cost a wake-up of that thread, spins with
//! `sched_yield` while its queue was contended, and a write to stderr per line, which woke
//! whatever reads the log: 3.4 system calls per review under the load test, 2.6 now. Here
//! a line is appended to a buffer under a lock, and the thread writes what has gathered
//! every [`INTERVAL`], or at once when a batch is large.
//! Nothing is dropped: a caller waits when the thread has fallen far behind, and
//! [`Flush`] writes the rest when it is dropped at exit.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

/// How long a line may wait in memory before it is written.
pub const INTERVAL: Duration = Duration::from_millis(50);
/// A batch this large is written at once rather than at the next interval.
const BATCH: usize = 64 * 1024;
/// Beyond this, callers wait for the writer thread (stderr is not being read, say).
const LIMIT: usize = 16 * 1024 * 1024;

#[derive(Default)]
struct Queue {
    lines: Vec<u8>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a batch is large, and at close.
    ready: Condvar,
    /// Signalled when the writer has taken a batch.
    taken: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves only bytes behind; they are still worth writing.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The writer side: a `MakeWriter` for tracing-subscriber. Each event is formatted into
/// its own buffer and appended whole, so lines never interleave.
#[derive(Clone)]
pub struct Batched {
    shared: Arc<Shared>,
}

/// Writes what is left and stops the writer thread when dropped.
pub struct Flush {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A batching writer onto `out`, and the guard that flushes it.
pub fn batched(out: impl Write + Send + 'static) -> std::io::Result<(Batched, Flush)> {
    let shared = Arc::new(Shared::default());
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new().name("bucketgate-logs".into()).spawn(move || write_batches(&shared, out))?
    };
    Ok((Batched { shared: shared.clone() }, Flush { shared, thread: Some(thread) }))
}

fn write_batches(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::new();
    loop {
        let closed = {
            let mut queue = shared.lock();
            while queue.lines.is_empty() && !queue.closed {
                queue = shared.ready.wait(queue).unwrap_or_else(|p| p.into_inner());
            }
            // Let more lines gather, unless a large batch or the close is waiting.
            if !queue.closed && queue.lines.len() < BATCH {
                queue = shared.ready.wait_timeout(queue, INTERVAL).map_or_else(|p| p.into_inner().0, |(q, _)| q);
            }
            std::mem::swap(&mut batch, &mut queue.lines);
            queue.closed
        };
        shared.taken.notify_all();
        // Nowhere to report a failed write to stderr; the lines are lost either way.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if closed && shared.lock().lines.is_empty() {
            return;
        }
    }
}

impl Batched {
    fn append(&self, line: &[u8]) {
        let mut queue = self.shared.lock();
        while queue.lines.len() >= LIMIT && !queue.closed {
            self.shared.ready.notify_one();
            queue = self.shared.taken.wait(queue).unwrap_or_else(|p| p.into_inner());
        }
        let before = queue.lines.len();
        queue.lines.extend_from_slice(line);
        // The writer waits for the first line of a batch, then for the interval or a full batch.
        if before == 0 || (before < BATCH && queue.lines.len() >= BATCH) {
            self.shared.ready.notify_one();
        }
    }
}

/// One event's text, appended to the queue whole when the event is done.
pub struct Line<'a> {
    to: &'a Batched,
    text: Vec<u8>,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if !self.text.is_empty() {
            self.to.append(&self.text);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Batched {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line { to: self, text: Vec::with_capacity(512) }
    }
}

impl Drop for Flush {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_one();
        self.shared.taken.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// tracing-subscriber's JSON lines (`timestamp`, `level`, `fields`, `target`, `span`,
/// `spans`, in that order), written into one byte buffer.
///
/// tracing-subscriber's own JSON format hands each piece of a line (a quote, a key, a run of
/// text between escapes) through an adaptor that checks it to be UTF-8 and appends it to
/// the line's `String`: about 33,000 instructions for the log line of a refused review, a
/// third of what the handler spent on such a review under load. Here serde_json writes
/// into a `Vec<u8>` and the line is checked once. Span fields are those that
/// [`JsonFields`](tracing_subscriber::fmt::format::JsonFields) recorded: a JSON object
/// each, merged into the span's object as tracing-subscriber does.
#[derive(Debug, Default)]
pub struct JsonLines {
    timer: SystemTime,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use tracing_log::NormalizeEvent;
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut line = Vec::with_capacity(512);
        line.extend_from_slice(br#"{"timestamp":""#);
        self.timer.format_time(&mut Writer::new(&mut Utf8(&mut line)))?;
        line.extend_from_slice(br#"","level":""#);
        line.extend_from_slice(meta.level().as_str().as_bytes());
        line.extend_from_slice(br#"","fields":{"#);
        event.record(&mut JsonFieldsOf { line: &mut line, first: true });
        line.extend_from_slice(br#"},"target":"#);
        string(&mut line, meta.target());
        let current = event.parent().and_then(|id| ctx.span(id)).or_else(|| ctx.lookup_current());
        if let Some(current) = current {
            line.extend_from_slice(br#","span":"#);
            span_object::<S, N>(&mut line, &current);
            // As tracing-subscriber does: the spans entered, even when the event names
            // another parent.
            line.extend_from_slice(br#","spans":["#);
            let entered = ctx.lookup_current();
            for (i, each) in entered.iter().flat_map(|leaf| leaf.scope().from_root()).enumerate() {
                if i > 0 {
                    line.push(b',');
                }
                span_object::<S, N>(&mut line, &each);
            }
            line.push(b']');
        }
        line.extend_from_slice(b"}\n");
        writer.write_str(std::str::from_utf8(&line).map_err(|_| std::fmt::Error)?)
    }
}

/// A span as an object: the fields recorded for it, then its name.
fn span_object<S, N>(line: &mut Vec<u8>, span: &SpanRef<'_, S>)
where
    S: for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    line.push(b'{');
    let extensions = span.extensions();
    let recorded = extensions.get::<FormattedFields<N>>().map_or("", |f| f.fields.as_str());
    let fields = recorded.trim().strip_prefix('{').and_then(|f| f.strip_suffix('}')).unwrap_or("").trim();
    if !fields.is_empty() {
        line.extend_from_slice(fields.as_bytes());
        line.push(b',');
    }
    line.extend_from_slice(br#""name":"#);
    string(line, span.name());
    line.push(b'}');
}

/// `text` as a JSON string.
fn string(line: &mut Vec<u8>, text: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *line, text);
}

/// `fmt::Write` onto a line's bytes, for the timestamp.
struct Utf8<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Utf8<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }
}

/// An event's fields as the members of a JSON object. 128-bit integers are left to
/// `record_debug`, and so written as strings, as tracing-serde writes them.
struct JsonFieldsOf<'a> {
    line: &'a mut Vec<u8>,
    first: bool,
}

impl JsonFieldsOf<'_> {
    fn value(&mut self, field: &Field, value: impl serde::Serialize) {
        if !std::mem::take(&mut self.first) {
            self.line.push(b',');
        }
        string(self.line, field.name());
        self.line.push(b':');
        // Strings and numbers into a Vec: cannot fail (a non-finite float is written as null).
        let _ = serde_json::to_writer(&mut *self.line, &value);
    }
}

impl Visit for JsonFieldsOf<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.value(field, value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.value(field, value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.value(field, value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.value(field, value);
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.value(field, value);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.value(field, value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.value(field, format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// A `Write` whose bytes the test can read.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Stuck in its first write until the test lets it go, as a stderr nobody reads.
    struct Stuck {
        go: Option<std::sync::mpsc::Receiver<()>>,
        sink: Sink,
    }

    impl Write for Stuck {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if let Some(go) = self.go.take() {
                // Bounded, so that a failing test ends rather than waits for its own guard.
                let _ = go.recv_timeout(std::time::Duration::from_secs(10));
            }
            self.sink.write(bytes)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn line(writer: &Batched, text: &str) {
        use tracing_subscriber::fmt::MakeWriter;
        let mut line = writer.make_writer();
        // Written in pieces, as a formatter does.
        for piece in text.as_bytes().chunks(3) {
            line.write_all(piece).unwrap();
        }
    }

    /// The same events through tracing-subscriber's JSON format and through [`JsonLines`].
    fn both_formats(events: impl Fn()) -> (Vec<Value>, Vec<Value>) {
        fn lines(sink: &Sink) -> Vec<Value> {
            let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
            text.lines()
                .map(|l| {
                    let mut line: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                    // The clock moved on between the two.
                    assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{l}");
                    line["timestamp"] = Value::Null;
                    line
                })
                .collect()
        }
        let (theirs, ours) = (Sink::default(), Sink::default());
        let sink = theirs.clone();
        let reference = tracing_subscriber::fmt().json().with_writer(move || sink.clone()).finish();
        tracing::subscriber::with_default(reference, &events);
        let sink = ours.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(JsonLines::default())
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, &events);
        (lines(&theirs), lines(&ours))
    }

    #[test]
    fn json_lines_say_what_tracing_subscribers_json_says() {
        let error = std::io::Error::other("disk \"full\"");
        let (theirs, ours) = both_formats(|| {
            tracing::info!(
                webhook = "validate",
                dry_run = false,
                count = 3u64,
                delta = -2i64,
                ratio = 0.5,
                not_a_number = f64::NAN,
                big = u128::MAX,
                %error,
                error_value = &error as &(dyn std::error::Error + 'static),
                debugged = ?vec!["a", "b"],
                response_message = "was {\"a\": \"1\"}\n\tnow \u{1} \u{e9}",
                "admission review answered"
            );
            let outer = tracing::info_span!("reconciling object", object.ref = "Bucket/team-a/photos", attempt = 2);
            let _outer = outer.enter();
            tracing::warn!("in one span");
            let inner = tracing::info_span!("bare");
            let _inner = inner.enter();
            tracing::error!(target: "elsewhere", code = 7, "in two");
            let explicit = tracing::info_span!(parent: None, "explicit", kind = "BucketClass");
            tracing::info!(parent: &explicit, "with an explicit parent");
            // As rustls's log records arrive through tracing-log.
            tracing_log::format_trace(
                &log::Record::builder()
                    .args(format_args!("sending warning alert"))
                    .level(log::Level::Warn)
                    .target("rustls::conn")
                    .module_path_static(Some("rustls::conn"))
                    .file_static(Some("src/conn.rs"))
                    .line(Some(42))
                    .build(),
            )
            .unwrap();
        });
        assert_eq!(ours.len(), 5, "{ours:#?}");
        assert_eq!(ours, theirs);
        assert_eq!(ours[0]["fields"]["response_message"], "was {\"a\": \"1\"}\n\tnow \u{1} \u{e9}");
        assert_eq!(ours[2]["spans"][1]["name"], "bare");
        assert_eq!(ours[4]["target"], "rustls::conn");
    }

    #[test]
    fn lines_are_written_within_the_interval_and_all_of_them_at_exit() {
        let sink = Sink::default();
        let (writer, flush) = batched(sink.clone()).unwrap();
        line(&writer, "first\n");
        let deadline = std::time::Instant::now() + INTERVAL * 20;
        while sink.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "a line waited more than 20 intervals");
            std::thread::sleep(INTERVAL / 5);
        }
        assert_eq!(*sink.0.lock().unwrap(), b"first\n");

        // From several threads at once, each line whole, none lost, the last ones by the flush.
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        line(&writer, &format!("thread {t} line {i}\n"));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        line(&writer, "last\n");
        drop(flush);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + 4 * 5_000 + 1);
        assert_eq!(lines.last(), Some(&"last"));
        for t in 0..4 {
            let mine: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with(&format!("thread {t} "))).collect();
            assert_eq!(mine.len(), 5_000);
            assert!(
                mine.iter().enumerate().all(|(i, l)| *l == format!("thread {t} line {i}")),
                "thread {t} out of order"
            );
        }
    }

    /// A writer that cannot keep up makes callers wait once [`LIMIT`] bytes are queued,
    /// and loses none of their lines.
    #[test]
    fn callers_wait_for_a_stuck_writer_and_lose_nothing() {
        let (go, wait) = std::sync::mpsc::channel();
        let sink = Sink::default();
        let (writer, flush) = batched(Stuck { go: Some(wait), sink: sink.clone() }).unwrap();
        let line_text = format!("{}\n", "x".repeat(1023));
        let lines = 3 * LIMIT / line_text.len();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let caller = {
            let (writer, text, done) = (writer.clone(), line_text.clone(), done.clone());
            std::thread::spawn(move || {
                use tracing_subscriber::fmt::MakeWriter;
                for _ in 0..lines {
                    writer.make_writer().write_all(text.as_bytes()).unwrap();
                }
                done.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        };
        // Unhindered, the caller would queue all of it in a few milliseconds.
        std::thread::sleep(INTERVAL * 8);
        assert!(!done.load(std::sync::atomic::Ordering::SeqCst), "the caller queued three times the limit");
        go.send(()).unwrap();
        caller.join().unwrap();
        drop(flush);
        let written = sink.0.lock().unwrap();
        assert_eq!(written.len(), lines * line_text.len());
        assert!(written.split(|b| *b == b'\n').filter(|l| !l.is_empty()).all(|l| l.len() == 1023));
    }
}
