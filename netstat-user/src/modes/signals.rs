//! The signals that end a traced mode (Ctrl+C, SIGTERM, SIGHUP): one place
//! for the stream and the live table.
use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct Stop {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Stop {
    pub fn install() -> std::io::Result<Stop> {
        Ok(Stop {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Resolves when any of them arrives.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}
