//! The ring buffer drained on a thread of its own, for consumers whose
//! work between two reads can be long (the live table's display: snapshot,
//! reconcile, render): the kernel's ring never waits behind that work, so
//! it never fills because of it. The thread owns the `Tracer` (it is made
//! there, on that thread's own runtime) and hands batches over a channel;
//! what it holds is the consumer's backlog in memory, never a loss. When
//! the `Drain` drops, the thread ends and the tracer with it: every program
//! is detached.
use std::thread::JoinHandle;

use anyhow::Context as _;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::{HookReport, Record, Tracer, TracerOptions};

enum Msg {
    Batch(Vec<Record>),
    /// Everything the kernel had reported when sync request `seq` arrived
    /// came before this.
    Synced(u64),
    Failed(String),
}

pub struct Drain {
    pub report: Vec<HookReport>,
    rx: UnboundedReceiver<Msg>,
    requests: Option<UnboundedSender<u64>>,
    seq: u64,
    thread: Option<JoinHandle<()>>,
}

impl Drain {
    /// Start the tracer on a thread of its own; its errors come back here.
    pub fn start(opts: &TracerOptions) -> anyhow::Result<Drain> {
        let opts = opts.clone();
        let (tx, rx) = unbounded_channel();
        let (req_tx, req_rx) = unbounded_channel();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("netstat-drain".into())
            .spawn(move || run(opts, tx, req_rx, started_tx))
            .context("starting the ring buffer's thread")?;
        match started_rx.recv() {
            Ok(Ok(report)) => {
                Ok(Drain { report, rx, requests: Some(req_tx), seq: 0, thread: Some(thread) })
            }
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                anyhow::bail!("the ring buffer's thread ended before the tracer started")
            }
        }
    }

    /// Wait for the next batch (or a lost-events report) into `out`.
    pub async fn next(&mut self, out: &mut Vec<Record>) -> anyhow::Result<()> {
        let msg = self.rx.recv().await;
        self.take(msg, out).map(|_| ())
    }

    /// Everything the kernel reported before this call (every record still
    /// in the ring, and every drop counted), appended to `out`.
    pub async fn sync(&mut self, out: &mut Vec<Record>) -> anyhow::Result<()> {
        self.seq += 1;
        let seq = self.seq;
        self.requests.as_ref().context("tracer stopped")?.send(seq).ok().context("the ring buffer's thread ended")?;
        loop {
            let msg = self.rx.recv().await;
            if self.take(msg, out)? == Some(seq) {
                return Ok(());
            }
        }
    }

    fn take(&mut self, msg: Option<Msg>, out: &mut Vec<Record>) -> anyhow::Result<Option<u64>> {
        match msg {
            Some(Msg::Batch(mut b)) => {
                out.append(&mut b);
                Ok(None)
            }
            Some(Msg::Synced(seq)) => Ok(Some(seq)),
            Some(Msg::Failed(e)) => anyhow::bail!("reading the ring buffer: {e}"),
            None => anyhow::bail!("the ring buffer's thread ended"),
        }
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        // Closing the request channel ends the thread, which drops the tracer.
        self.requests = None;
        self.rx.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Started = std::sync::mpsc::Sender<anyhow::Result<Vec<HookReport>>>;

fn run(opts: TracerOptions, tx: UnboundedSender<Msg>, mut requests: UnboundedReceiver<u64>, started: Started) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = started.send(Err(e.into()));
            return;
        }
    };
    let mut tracer = {
        let _g = rt.enter();
        match Tracer::start(&opts) {
            Ok(t) => t,
            Err(e) => {
                let _ = started.send(Err(e));
                return;
            }
        }
    };
    if started.send(Ok(tracer.report.clone())).is_err() {
        return;
    }
    rt.block_on(async move {
        // Hand the batch over (it leaves an empty one, grown as records
        // come: most batches between two polls are small); false once the
        // consumer is gone.
        let hand_over = |batch: &mut Vec<Record>| batch.is_empty() || tx.send(Msg::Batch(std::mem::take(batch))).is_ok();
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                req = requests.recv() => {
                    let Some(seq) = req else { return };
                    loop {
                        let more = tracer.finish(&mut batch);
                        if !hand_over(&mut batch) {
                            return;
                        }
                        if !more {
                            break;
                        }
                    }
                    if tx.send(Msg::Synced(seq)).is_err() {
                        return;
                    }
                }
                r = tracer.next_batch(&mut batch) => {
                    if let Err(e) = r {
                        let _ = tx.send(Msg::Failed(e.to_string()));
                        return;
                    }
                }
            }
            if !hand_over(&mut batch) {
                return;
            }
        }
    });
}
