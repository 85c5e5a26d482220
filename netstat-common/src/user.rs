//! User-space side: Pod impls and decoding of ring buffer records.
extern crate std;

use crate::{EVENT_SIZE, Event, KernelOffsets, ListenKey, Listener, Owner, PendingUdp};

unsafe impl aya::Pod for Event {}
unsafe impl aya::Pod for Owner {}
unsafe impl aya::Pod for ListenKey {}
unsafe impl aya::Pod for Listener {}
unsafe impl aya::Pod for PendingUdp {}
unsafe impl aya::Pod for KernelOffsets {}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("event record is {0} bytes, expected at least {EVENT_SIZE}")]
    Short(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
}

impl TryFrom<&[u8]> for Event {
    type Error = DecodeError;
    fn try_from(b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() < EVENT_SIZE {
            return Err(DecodeError::Short(b.len()));
        }
        // Every bit pattern is a valid Event (integers and byte arrays only).
        let ev: Event = unsafe { core::ptr::read_unaligned(b.as_ptr().cast()) };
        if !(crate::kind::TCP_STATE..=crate::kind::LAST).contains(&ev.kind) {
            return Err(DecodeError::UnknownKind(ev.kind));
        }
        Ok(ev)
    }
}

impl Event {
    /// The record as the kernel writes it (for tests and fuzzing).
    pub fn as_bytes(&self) -> &[u8] {
        unsafe { core::slice::from_raw_parts((self as *const Event).cast(), EVENT_SIZE) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind;

    #[test]
    fn round_trip() {
        let mut e = Event::zeroed();
        e.kind = kind::TCP_STATE;
        e.tgid = 42;
        e.sport = 8080;
        e.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.comm[..4].copy_from_slice(b"curl");
        e.cookie = 0x0123_4567_89ab_cdef;
        let back = Event::try_from(e.as_bytes()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn every_field_keeps_its_offset() {
        // Fields are appended at the end, so every earlier one keeps its offset.
        let mut e = Event::zeroed();
        e.kind = kind::TCP_STATE;
        e.cookie = 0x1122_3344_5566_7788;
        let b = e.as_bytes();
        assert_eq!(b[128..136], 0x1122_3344_5566_7788u64.to_ne_bytes());
        assert_eq!(core::mem::offset_of!(Event, cookie), 128);
        assert_eq!(core::mem::offset_of!(Event, bytes_received), 120);
        // The holder's start and the creator came after it.
        assert_eq!(core::mem::offset_of!(Event, pid_start_ns), 136);
        assert_eq!(core::mem::offset_of!(Event, creator_comm), 160);
        // The holder's cgroup, parent and namespace PID came after that.
        assert_eq!(core::mem::offset_of!(Event, cgroup_id), 176);
        assert_eq!(core::mem::offset_of!(Event, parent_tgid), 184);
        assert_eq!(core::mem::offset_of!(Event, ns_pid), 188);
        assert_eq!(core::mem::offset_of!(Event, parent_comm), EVENT_SIZE - 16);
    }

    #[test]
    fn short_record_is_an_error() {
        let e = Event::zeroed();
        assert_eq!(Event::try_from(&e.as_bytes()[..100]), Err(DecodeError::Short(100)));
        // Records of the layouts before `cookie` (128 bytes) and before the
        // creator (136) are short now.
        assert_eq!(Event::try_from(&e.as_bytes()[..128]), Err(DecodeError::Short(128)));
        assert_eq!(Event::try_from(&e.as_bytes()[..136]), Err(DecodeError::Short(136)));
        // And those before the holder's cgroup and parent (176).
        assert_eq!(Event::try_from(&e.as_bytes()[..176]), Err(DecodeError::Short(176)));
        assert_eq!(Event::try_from(&[][..]), Err(DecodeError::Short(0)));
    }

    #[test]
    fn unknown_kind_is_an_error() {
        let mut e = Event::zeroed();
        e.kind = 99;
        assert_eq!(Event::try_from(e.as_bytes()), Err(DecodeError::UnknownKind(99)));
        e.kind = 0;
        assert_eq!(Event::try_from(e.as_bytes()), Err(DecodeError::UnknownKind(0)));
    }

    #[test]
    fn longer_record_decodes_prefix() {
        let mut e = Event::zeroed();
        e.kind = kind::UDP_BIND;
        let mut v = e.as_bytes().to_vec();
        v.extend_from_slice(&[0xff; 8]);
        assert_eq!(Event::try_from(&v[..]).unwrap(), e);
    }
}
