//! The collector's streams, one trace file each, kept across connections: a sender whose
//! connection broke comes back with the same stream id and goes on where its file ends.
//!
//! A file only ever grows by whole batches, each written in one go and synced before the
//! sender hears of it; a write that fails (a full disk) is cut back off the file. So whatever
//! happens to a sender, its file holds every complete batch, and readers call it whole only
//! when the sender's end-of-stream marker came too.

use std::{
    collections::HashMap,
    io::{self, Seek, Write},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use pfnscope_trace::{
    CpuCounters, Existing, LossCounters, NewFile, OutputError, TraceMeta,
    stream::{END_OF_STREAM, Hello, StreamId},
};

use crate::naming;

/// What became of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// A connection is sending it.
    Open,
    /// Its connection went away before the end: the file ends at its last batch (cut short)
    /// unless the sender comes back.
    Detached(String),
    /// The sender's end marker is in the file.
    Finished,
    /// The collector stopped and finished the file while the sender was still at it.
    Stopped,
    /// It cannot go on (a corrupt batch, a full disk): the file keeps what came before.
    Failed(String),
}

/// Numbers the live lines show, updated without the stream's lock.
#[derive(Default)]
pub struct Stats {
    pub events: AtomicU64,
    pub batches: AtomicU64,
    /// Ring-buffer drops, summed over CPUs, as the latest loss counters say.
    pub dropped: AtomicU64,
    /// Unpaired calls and failed vma reads, as the latest loss counters say.
    pub lost: AtomicU64,
    /// Milliseconds since the collector started, at the last batch.
    pub last_batch_ms: AtomicU64,
}

pub struct Slot {
    pub id: StreamId,
    pub stats: Stats,
    inner: Mutex<Inner>,
}

struct Inner {
    file: Option<StreamFile>,
    /// `box (kernel)`, once the schema came.
    label: String,
    schema: Vec<u8>,
    /// The last batch on disk, numbered as the sender numbers them.
    last_seq: u64,
    /// The connection that may write (a newer one takes over from one that broke unseen).
    owner: u64,
    state: State,
    /// The latest loss counters per CPU, as a reader of the file will hand them out.
    counters: LossCounters,
}

/// A stream's file.
struct StreamFile {
    out: NewFile,
    /// Its length up to the end of the last whole batch.
    len: u64,
}

/// Why a batch did not reach the file.
#[derive(Debug)]
pub enum AppendError {
    /// A newer connection of the same stream took over: this one just stops.
    TakenOver,
    /// The write failed (the file was cut back to its last whole batch).
    Write { path: PathBuf, err: io::Error },
}

/// What starting a stream's file did.
pub enum Started {
    New(PathBuf),
    Resumed(PathBuf),
}

pub struct Streams {
    dir: PathBuf,
    started: Instant,
    map: Mutex<HashMap<StreamId, Arc<Slot>>>,
}

impl Streams {
    pub fn new(dir: &Path) -> Streams {
        Streams {
            dir: dir.to_path_buf(),
            started: Instant::now(),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Milliseconds since the collector started.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The stream a hello names, for connection `conn`, and the last batch of it on disk (the
    /// sender goes on after it).
    pub fn claim(&self, hello: &Hello, conn: u64) -> Result<(Arc<Slot>, u64), String> {
        let mut map = self.map.lock().expect("streams");
        let slot = map
            .entry(hello.id)
            .or_insert_with(|| {
                Arc::new(Slot {
                    id: hello.id,
                    stats: Stats::default(),
                    inner: Mutex::new(Inner {
                        file: None,
                        label: String::new(),
                        schema: Vec::new(),
                        last_seq: hello.next - 1,
                        owner: conn,
                        state: State::Open,
                        counters: LossCounters::default(),
                    }),
                })
            })
            .clone();
        let mut s = slot.inner.lock().expect("stream");
        match &s.state {
            State::Finished | State::Stopped => {
                return Err(format!("stream {} was already finished", hello.id));
            }
            State::Failed(why) => return Err(format!("stream {} failed: {why}", hello.id)),
            State::Open | State::Detached(_) => {}
        }
        if s.file.is_none() {
            s.last_seq = hello.next - 1;
        } else if s.last_seq + 1 < hello.next {
            return Err(format!(
                "the sender lacks batches {} to {} of stream {}, which this collector never got",
                s.last_seq + 1,
                hello.next - 1,
                hello.id
            ));
        }
        s.owner = conn;
        s.state = State::Open;
        let have = s.last_seq;
        drop(s);
        Ok((slot, have))
    }

    /// Drops a stream that never got a file (its sender was refused).
    pub fn forget(&self, slot: &Slot) {
        let mut map = self.map.lock().expect("streams");
        if slot.inner.lock().expect("stream").file.is_none() {
            map.remove(&slot.id);
        }
    }

    /// Every stream with a file: its label, path and state.
    pub fn all(&self) -> Vec<Arc<Slot>> {
        let map = self.map.lock().expect("streams");
        let mut v: Vec<Arc<Slot>> = map.values().cloned().collect();
        v.sort_by_key(|s| s.id);
        v.retain(|s| s.inner.lock().expect("stream").file.is_some());
        v
    }

    /// Starts the stream's file with its schema (named from `meta`), or checks that a resumed
    /// stream has the schema its file has.
    pub fn start(
        &self,
        slot: &Slot,
        meta: &TraceMeta,
        schema: &[u8],
        conn: u64,
    ) -> Result<Started, String> {
        let mut s = slot.inner.lock().expect("stream");
        if s.owner != conn {
            return Err("a newer connection took the stream over".into());
        }
        if let Some(f) = &s.file {
            if s.schema != schema {
                return Err(format!(
                    "it resumes {} with another schema",
                    f.out.path().display()
                ));
            }
            return Ok(Started::Resumed(f.out.path().to_path_buf()));
        }
        let file = StreamFile::create(&self.dir, &naming::trace_file_name(meta), schema)?;
        let path = file.out.path().to_path_buf();
        s.label = format!("{} ({})", meta.host, meta.kernel_release);
        s.schema = schema.to_vec();
        s.file = Some(file);
        Ok(Started::New(path))
    }
}

impl Slot {
    /// Appends one batch (`events` events, the loss counters it carries); the batch's number.
    pub fn append(
        &self,
        conn: u64,
        bytes: &[u8],
        events: u64,
        counters: &[CpuCounters],
        now_ms: u64,
    ) -> Result<u64, AppendError> {
        let mut s = self.inner.lock().expect("stream");
        if s.owner != conn {
            return Err(AppendError::TakenOver);
        }
        let f = s
            .file
            .as_mut()
            .expect("a stream's batches follow its schema");
        f.append(bytes).map_err(|err| AppendError::Write {
            path: f.out.path().to_path_buf(),
            err,
        })?;
        s.last_seq += 1;
        self.stats.events.fetch_add(events, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        if !counters.is_empty() {
            counters.iter().for_each(|c| s.counters.update(*c));
            let total = s.counters.total();
            self.stats.dropped.store(total.dropped, Ordering::Relaxed);
            self.stats
                .lost
                .store(total.unpaired + total.read_failed, Ordering::Relaxed);
        }
        self.stats.last_batch_ms.store(now_ms, Ordering::Relaxed);
        Ok(s.last_seq)
    }

    /// Writes the end marker and sets the stream's final state (`Finished` or `Stopped`);
    /// the last batch's number.
    pub fn finish(&self, conn: u64, state: State) -> Result<u64, AppendError> {
        let mut s = self.inner.lock().expect("stream");
        if s.owner != conn {
            return Err(AppendError::TakenOver);
        }
        if let Some(f) = s.file.as_mut() {
            f.append(&END_OF_STREAM).map_err(|err| AppendError::Write {
                path: f.out.path().to_path_buf(),
                err,
            })?;
        }
        s.state = state;
        Ok(s.last_seq)
    }

    /// Sets the state of a stream connection `conn` still owns.
    pub fn set(&self, conn: u64, state: State) {
        let mut s = self.inner.lock().expect("stream");
        if s.owner == conn {
            s.state = state;
        }
    }

    pub fn state(&self) -> State {
        self.inner.lock().expect("stream").state.clone()
    }

    /// `box (kernel)`, empty before the schema.
    pub fn label(&self) -> String {
        self.inner.lock().expect("stream").label.clone()
    }

    pub fn path(&self) -> Option<PathBuf> {
        let s = self.inner.lock().expect("stream");
        s.file.as_ref().map(|f| f.out.path().to_path_buf())
    }
}

impl StreamFile {
    /// A new file named `name` in `dir` (numbered when the name is taken: never replaced),
    /// holding `schema`, synced, with its name.
    fn create(dir: &Path, name: &str, schema: &[u8]) -> Result<StreamFile, String> {
        let mut candidate = name.to_string();
        for n in 2..10_000 {
            let path = dir.join(&candidate);
            match NewFile::create(&path, Existing::Refuse, &[]) {
                Ok(out) => {
                    let mut f = StreamFile { out, len: 0 };
                    f.append(schema)
                        .map_err(|e| format!("writing {}: {e}", path.display()))?;
                    match f.out.place() {
                        Ok(()) => return Ok(f),
                        Err(OutputError::Exists { .. }) => {}
                        Err(e) => return Err(e.to_string()),
                    }
                }
                Err(OutputError::Exists { .. }) => {}
                Err(e) => return Err(e.to_string()),
            }
            candidate = naming::numbered(name, n);
        }
        Err(format!("no free name for {name} in {}", dir.display()))
    }

    /// Appends `bytes` in one write and syncs them; a failed write is cut back off the file.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut f = self.out.file();
        match f.write_all(bytes).and_then(|()| f.sync_data()) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Back to the end of the last whole batch, the write position too.
                let _ = f
                    .set_len(self.len)
                    .and_then(|()| f.seek(std::io::SeekFrom::Start(self.len)))
                    .and_then(|_| f.sync_data());
                Err(e)
            }
        }
    }
}
