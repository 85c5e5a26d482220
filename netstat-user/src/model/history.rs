//! A connection's whole life as the recorder keeps it and the history
//! queries read it: the connection model's `Connection` (as it was at its
//! end, or now while it is open) plus when it opened, settled, began to
//! close and closed, and how it ended. Plain data; the store is
//! `sources::history`.
use super::{Connection, Owner};

/// How a connection ended (the schema's `end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum End {
    /// Still open (or open when the recording stopped: see the gaps).
    Open,
    /// The local side sent the first FIN (an active close).
    FinLocal,
    /// The peer sent the first FIN.
    FinRemote,
    /// This socket sent an RST (an abort: SO_LINGER 0, unread data at close).
    RstSent,
    /// The peer reset it (a refused connect is one).
    RstReceived,
    /// Retransmissions or keepalives gave up (ETIMEDOUT).
    Timeout,
    /// Closed with neither FIN nor RST (a connect abandoned in SYN_SENT, a
    /// listener or UDP socket closed).
    Closed,
    /// It ended while netstat was not recording.
    Unknown,
}

impl End {
    pub const ALL: [End; 8] =
        [End::Open, End::FinLocal, End::FinRemote, End::RstSent, End::RstReceived, End::Timeout, End::Closed, End::Unknown];

    pub fn key(self) -> &'static str {
        match self {
            End::Open => "open",
            End::FinLocal => "fin_local",
            End::FinRemote => "fin_remote",
            End::RstSent => "rst_sent",
            End::RstReceived => "rst_received",
            End::Timeout => "timeout",
            End::Closed => "closed",
            End::Unknown => "unknown",
        }
    }

    /// The --history text column.
    pub fn text(self) -> &'static str {
        match self {
            End::Open => "",
            End::FinLocal => "local FIN",
            End::FinRemote => "remote FIN",
            End::RstSent => "RST sent",
            End::RstReceived => "RST received",
            End::Timeout => "timeout",
            End::Closed => "closed",
            End::Unknown => "unknown",
        }
    }

    /// Stable numbers for the store: never renumber.
    pub fn code(self) -> i64 {
        match self {
            End::Open => 0,
            End::FinLocal => 1,
            End::FinRemote => 2,
            End::RstSent => 3,
            End::RstReceived => 4,
            End::Timeout => 5,
            End::Closed => 6,
            End::Unknown => 7,
        }
    }

    pub fn from_code(c: i64) -> End {
        End::ALL.into_iter().find(|e| e.code() == c).unwrap_or(End::Unknown)
    }
}

/// Which side sent the first FIN, where one did (a reset connection may
/// have had one first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinFirst {
    Local,
    Remote,
}

/// One connection lifetime (TCP) or socket lifetime (UDP, a listener).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The recorder's id for it (the store's row id).
    pub id: i64,
    /// Addresses, the state it ended in (the one before CLOSE, TIME_WAIT
    /// after an active close; its state now while open), identity, uid and
    /// its last holder (`owner.creator`: the creator or acceptor).
    pub conn: Connection,
    /// Unix µs when it was first seen.
    pub opened_us: i64,
    /// It existed before the recording that first saw it started.
    pub before_recording: bool,
    /// The kernel made it for a listener (an accepted connection).
    pub passive: bool,
    /// µs after `opened_us` when it reached ESTABLISHED / left it.
    pub established_after_us: Option<i64>,
    pub closing_after_us: Option<i64>,
    /// Unix µs when it closed; None while open.
    pub closed_us: Option<i64>,
    pub end: End,
    pub fin_first: Option<FinFirst>,
    pub bytes_sent: Option<u64>,
    pub bytes_received: Option<u64>,
    /// For one that changed hands: every holder with the unix µs it took
    /// the socket, oldest first; the last is `conn.owner`. Empty when
    /// `conn.owner` held it throughout.
    pub holders: Vec<(i64, Owner)>,
    /// The store says it changed hands (`holders` is read only for those).
    pub handed_over: bool,
    /// The store has a row for it already (written while open, or read
    /// back): the next write replaces it.
    pub stored: bool,
    /// The host that recorded it, read from a fleet (PostgreSQL) store.
    pub host: Option<std::sync::Arc<str>>,
}

/// How long Linux keeps a TIME_WAIT socket (TCP_TIMEWAIT_LEN).
pub const TIME_WAIT_US: i64 = 60_000_000;

impl Recorded {
    /// Whether it ended in TIME_WAIT (an active close): netstat then listed
    /// it for `TIME_WAIT_US` more, with no process.
    pub fn time_wait(&self) -> bool {
        self.closed_us.is_some() && self.conn.state == Some(netstat_common::tcp_state::TIME_WAIT)
    }

    /// When it stopped being listed: its close, its TIME_WAIT's end.
    pub fn listed_until_us(&self) -> Option<i64> {
        self.closed_us.map(|c| if self.time_wait() { c + TIME_WAIT_US } else { c })
    }

    /// Whether netstat would have listed it at unix µs `t`.
    pub fn listed_at(&self, t: i64) -> bool {
        self.opened_us <= t && self.listed_until_us().is_none_or(|u| t < u || (u == t && !self.time_wait()))
    }

    /// The holder at unix µs `t`.
    pub fn holder_at(&self, t: i64) -> Option<&Owner> {
        match self.holders.iter().rev().find(|(since, _)| *since <= t) {
            Some((_, o)) => Some(o),
            None => self.holders.first().map(|(_, o)| o).or(self.conn.owner.as_ref()),
        }
    }

    /// Its TCP state at unix µs `t` (None for UDP), as netstat would have
    /// shown it: the opening state, ESTABLISHED, then the state it ended in
    /// (its state now, while open).
    pub fn state_at(&self, t: i64) -> Option<u32> {
        use netstat_common::tcp_state::*;
        let s = self.conn.state?;
        if s == LISTEN {
            return Some(LISTEN);
        }
        if self.closed_us.is_some_and(|c| t >= c) {
            return Some(TIME_WAIT);
        }
        let since = t - self.opened_us;
        match (self.established_after_us, self.closing_after_us) {
            (Some(e), _) if since < e => Some(if self.passive { SYN_RECV } else { SYN_SENT }),
            (_, Some(c)) if since >= c => Some(s),
            (Some(_), _) => Some(ESTABLISHED),
            (None, _) => Some(s),
        }
    }
}

/// Part of the record that may be incomplete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GapKind {
    /// No netstat was recording (never started yet, stopped, killed,
    /// or the time before retention's horizon).
    NotRecording,
    /// The kernel dropped events (`reason`, as `--stream` names it).
    Lost { reason: String, count: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub from_us: i64,
    pub to_us: i64,
    pub kind: GapKind,
    /// The host whose record it is, in a fleet (PostgreSQL) store.
    pub host: Option<std::sync::Arc<str>>,
}
