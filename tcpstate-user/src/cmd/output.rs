//! Standard output through a writer thread, so that a slow or stalled
//! reader never blocks the event loop (which reads the ring buffer and
//! handles signals).
//!
//! The printers write into an [`Output`]; each flush hands the bytes
//! written so far to the writer thread as one chunk through a short
//! queue. While the queue is full the bytes stay in the buffer and the next
//! chunk grows; only once the buffer holds [`PENDING_BYTES`] is it dropped
//! and its lines counted as lost output: the loop never waits for the
//! reader, and memory stays bounded. At the end, [`Writer::finish`] gives
//! the thread a short time to write what is queued and counts what it could
//! not.

use std::{
    io::{self, Write},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, SyncSender, TrySendError},
    },
    thread,
    time::Duration,
};

use bytes::{Bytes, BytesMut};

/// A chunk is sent once this much is written, even without a flush.
const CHUNK_BYTES: usize = 256 << 10;
/// Room a buffer has beyond [`CHUNK_BYTES`], so that the write that fills
/// a chunk does not grow it (growing copies everything written so far).
const LINE_ROOM: usize = 64 << 10;
/// Chunks waiting for the writer thread at most.
const QUEUE_CHUNKS: usize = 2;
/// Bytes kept while the queue is full before they are dropped. With the
/// chunks queued and the one being written, output holds at most about
/// four times this much.
const PENDING_BYTES: usize = 8 << 20;

/// What the event loop and the writer thread share.
#[derive(Default)]
struct Shared {
    /// Lines handed to the thread.
    sent: AtomicU64,
    /// Lines the thread wrote.
    written: AtomicU64,
    /// Lines dropped because the queue was full.
    dropped: AtomicU64,
    /// The thread's write error, which ends the run (e.g. a closed pipe).
    /// Read on every write: once set, without a lock.
    error: OnceLock<io::ErrorKind>,
    /// What was left when the [`Output`] went away with the queue full:
    /// written after the queue, within [`Writer::finish`]'s grace.
    last: Mutex<Option<Chunk>>,
}

/// Bytes for the writer thread and the lines they hold, counted once, as
/// they were written.
type Chunk = (Bytes, u64);

/// The writing end the printers use.
pub struct Output {
    buf: BytesMut,
    /// Lines in `buf`, counted as they are written.
    buf_lines: u64,
    /// Size of `buf` at which a full chunk is next offered to the thread.
    next_try: usize,
    tx: Option<SyncSender<Chunk>>,
    /// Buffers the thread has written, for reuse: a fresh one of this size
    /// is fresh memory from the system, which faults in page by page.
    spare: Receiver<BytesMut>,
    shared: Arc<Shared>,
    /// [`PENDING_BYTES`], smaller in tests.
    pending_max: usize,
}

/// The writer thread's handle, to end it.
pub struct Writer {
    done: Receiver<()>,
    shared: Arc<Shared>,
}

/// Lines of output that did not reach the reader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Undelivered {
    /// Dropped while the run went on: the queue was full.
    pub dropped: u64,
    /// Queued but not written when the run ended: the reader stalled.
    pub unwritten: u64,
}

impl Undelivered {
    pub fn total(&self) -> u64 {
        self.dropped + self.unwritten
    }
}

/// Starts a writer thread that writes to `sink` (standard output).
pub fn start(sink: impl Write + Send + 'static) -> io::Result<(Output, Writer)> {
    start_with(sink, QUEUE_CHUNKS, PENDING_BYTES)
}

fn start_with(
    mut sink: impl Write + Send + 'static,
    chunks: usize,
    pending_max: usize,
) -> io::Result<(Output, Writer)> {
    let (tx, rx) = mpsc::sync_channel::<Chunk>(chunks);
    let (spare_tx, spare) = mpsc::sync_channel::<BytesMut>(chunks + 1);
    let (done_tx, done) = mpsc::channel();
    let shared = Arc::new(Shared::default());
    let theirs = Arc::clone(&shared);
    thread::Builder::new()
        .name("tcpstate-output".into())
        .spawn(move || {
            let last = || theirs.last.lock().unwrap_or_else(|p| p.into_inner()).take();
            for (chunk, lines) in rx.into_iter().chain(std::iter::from_fn(last)) {
                if let Err(e) = sink.write_all(&chunk).and_then(|()| sink.flush()) {
                    let _ = theirs.error.set(e.kind());
                    break;
                }
                theirs.written.fetch_add(lines, Ordering::Relaxed);
                // Not one that grew while the queue was full: spares stay
                // the size of a chunk.
                if let Ok(mut buf) = chunk.try_into_mut()
                    && buf.capacity() <= CHUNK_BYTES + LINE_ROOM
                {
                    buf.clear();
                    let _ = spare_tx.try_send(buf);
                }
            }
            let _ = done_tx.send(());
        })?;
    Ok((
        Output {
            buf: BytesMut::with_capacity(CHUNK_BYTES + LINE_ROOM),
            buf_lines: 0,
            next_try: 0,
            tx: Some(tx),
            spare,
            shared: Arc::clone(&shared),
            pending_max,
        },
        Writer { done, shared },
    ))
}

fn lines(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

/// What the output lost so far, readable while the printers own the
/// [`Output`].
#[derive(Clone, Default)]
pub struct Stats(Arc<Shared>);

impl Stats {
    /// Lines dropped so far because the reader did not keep up.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

impl Output {
    pub fn stats(&self) -> Stats {
        Stats(Arc::clone(&self.shared))
    }

    /// Hands what is buffered to the writer thread. While its queue is
    /// full the bytes stay here (no copy), up to the bound; past it they
    /// are dropped and counted. At the end (`last`) they go after the
    /// queue.
    fn send(&mut self, last: bool) {
        if self.buf.is_empty() {
            return;
        }
        let Some(tx) = &self.tx else { return };
        let chunk = std::mem::take(&mut self.buf).freeze();
        match tx.try_send((chunk, self.buf_lines)) {
            Ok(()) => {
                self.shared
                    .sent
                    .fetch_add(self.buf_lines, Ordering::Relaxed);
                self.buf = self
                    .spare
                    .try_recv()
                    .unwrap_or_else(|_| BytesMut::with_capacity(CHUNK_BYTES + LINE_ROOM));
            }
            Err(TrySendError::Full(chunk)) if last => {
                self.shared
                    .sent
                    .fetch_add(self.buf_lines, Ordering::Relaxed);
                *self.shared.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(chunk);
            }
            Err(TrySendError::Full((chunk, _))) if chunk.len() < self.pending_max => {
                // Unique, so taken back without copying.
                self.buf = chunk
                    .try_into_mut()
                    .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
                return;
            }
            Err(TrySendError::Full(_)) => {
                self.shared
                    .dropped
                    .fetch_add(self.buf_lines, Ordering::Relaxed);
            }
            // The thread ended on a write error, reported by `error`.
            Err(TrySendError::Disconnected(_)) => {}
        }
        self.buf_lines = 0;
    }

    fn error(&self) -> Option<io::Error> {
        self.shared.error.get().map(|&kind| io::Error::from(kind))
    }
}

impl Write for Output {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if let Some(e) = self.error() {
            return Err(e);
        }
        self.buf.extend_from_slice(bytes);
        self.buf_lines += lines(bytes);
        // Once a chunk is full, and then at every doubling while the queue
        // stays full: a stalled reader costs no more than a fast one.
        if self.buf.len() >= CHUNK_BYTES && self.buf.len() >= self.next_try {
            let before = self.buf.len();
            self.send(false);
            self.next_try = if self.buf.is_empty() { 0 } else { before * 2 };
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send(false);
        self.error().map_or(Ok(()), Err)
    }
}

impl Drop for Output {
    /// Sends what is left; the writer thread ends once it has written it.
    fn drop(&mut self) {
        self.send(true);
        self.tx = None;
    }
}

impl Writer {
    /// Waits up to `grace` for the thread to write what is queued (the
    /// [`Output`] must be dropped first), and says what did not reach the
    /// reader.
    pub fn finish(self, grace: Duration) -> Undelivered {
        let _ = self.done.recv_timeout(grace);
        let s = &self.shared;
        Undelivered {
            dropped: s.dropped.load(Ordering::Relaxed),
            unwritten: s
                .sent
                .load(Ordering::Relaxed)
                .saturating_sub(s.written.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::mpsc::{Receiver as Rx, channel},
        time::Instant,
    };

    use super::*;

    /// A sink that writes nothing until told to, then everything.
    struct Stalled(Rx<()>, Arc<Mutex<Vec<u8>>>);

    impl Write for Stalled {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let _ = self.0.recv();
            self.1.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn everything_arrives_when_the_reader_keeps_up() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = SharedVec(Arc::clone(&got));
        let (mut out, writer) = start(sink).unwrap();
        for i in 0..10_000 {
            writeln!(out, "line {i}").unwrap();
            if i % 100 == 0 {
                out.flush().unwrap();
            }
        }
        drop(out);
        assert_eq!(
            writer.finish(Duration::from_secs(5)),
            Undelivered::default()
        );
        let text = String::from_utf8(got.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 10_000);
        assert_eq!(text.lines().last(), Some("line 9999"));
    }

    #[test]
    fn a_stalled_reader_never_blocks_the_writer_and_loss_is_counted() {
        let (release, gate) = channel();
        let got = Arc::new(Mutex::new(Vec::new()));
        let (mut out, writer) = start_with(Stalled(gate, Arc::clone(&got)), 2, 64).unwrap();
        let started = Instant::now();
        for i in 0..1000 {
            writeln!(out, "line {i}").unwrap();
            out.flush().unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(1), "writes blocked");
        // Two chunks queued and, once the thread took the first, one in its
        // hands; at most 64 bytes kept; the rest dropped.
        let dropped = out.stats().dropped();
        assert!((985..=998).contains(&dropped), "{dropped}");
        drop(out);
        let started = Instant::now();
        let lost = writer.finish(Duration::from_millis(50));
        assert!(started.elapsed() < Duration::from_secs(1), "finish blocked");
        assert!(lost.dropped >= dropped, "{lost:?}");
        assert_eq!(lost.total(), 1000, "nothing was written: {lost:?}");
        drop(release);
    }

    #[test]
    fn a_closed_reader_is_an_error() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (mut out, _writer) = start(Closed).unwrap();
        // The writer thread's error comes back at some later call, which
        // may already be this one.
        let _ = writeln!(out, "x").and_then(|()| out.flush());
        let deadline = Instant::now() + Duration::from_secs(5);
        while out.flush().is_ok() {
            assert!(Instant::now() < deadline, "the error never came back");
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            out.write(b"y").unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }

    struct SharedVec(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedVec {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}
