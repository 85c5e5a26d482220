//! A small reader of kernel BTF (`/sys/kernel/btf/vmlinux`): finds a struct
//! member's byte offset and size by name, looking through anonymous unions
//! and structs. Parsing is total: malformed input is an error, never a panic.
use std::collections::HashMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("BTF data is truncated or malformed ({0})")]
    Malformed(&'static str),
    #[error("BTF has no struct {0}")]
    NoStruct(String),
    #[error("BTF struct {0} has no member {1}")]
    NoMember(String, String),
    #[error("BTF member {0} is a bitfield")]
    Bitfield(String),
    #[error("BTF member {0} is {1} bytes, expected {2}")]
    Width(String, u32, u32),
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// How many composite types one member lookup may visit (vmlinux needs a
/// handful: anonymous unions nest two or three deep).
const FIND_BUDGET: u32 = 4096;

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    ty: u32,
    /// Bit offset; `bitfield` is the width when it is a bitfield.
    bit_offset: u32,
    bitfield: u32,
}

#[derive(Debug, Clone)]
struct Type {
    name: u32,
    kind: u32,
    /// Size for INT/STRUCT/UNION/ENUM; referenced type for PTR/TYPEDEF/modifiers.
    size_or_type: u32,
    members: Vec<Member>,
    /// ARRAY: (element type, element count).
    array: Option<(u32, u32)>,
}

pub struct Btf {
    types: Vec<Type>, // index = type id; 0 is void
    strings: Vec<u8>,
    structs: HashMap<String, u32>,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    let s = b.get(off..off + 4).ok_or(BtfError::Malformed("short read"))?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl Btf {
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        if data.len() < 24 || data[0..2] != [0x9f, 0xeb] {
            return Err(BtfError::Malformed("bad magic (only little-endian BTF is read)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let body = data.get(hdr_len..).ok_or(BtfError::Malformed("header length"))?;
        let tsec = body
            .get(type_off..type_off.checked_add(type_len).ok_or(BtfError::Malformed("type section"))?)
            .ok_or(BtfError::Malformed("type section"))?;
        let strings = body
            .get(str_off..str_off.checked_add(str_len).ok_or(BtfError::Malformed("string section"))?)
            .ok_or(BtfError::Malformed("string section"))?
            .to_vec();
        let mut types = vec![Type { name: 0, kind: 0, size_or_type: 0, members: vec![], array: None }];
        let mut p = 0usize;
        while p < tsec.len() {
            let name = u32_at(tsec, p)?;
            let info = u32_at(tsec, p + 4)?;
            let size_or_type = u32_at(tsec, p + 8)?;
            p += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kflag = info >> 31 == 1;
            let mut t = Type { name, kind, size_or_type, members: vec![], array: None };
            match kind {
                KIND_INT => p += 4,
                KIND_ARRAY => {
                    let elem = u32_at(tsec, p)?;
                    let nelems = u32_at(tsec, p + 8)?;
                    t.array = Some((elem, nelems));
                    p += 12;
                }
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = p + i * 12;
                        let off = u32_at(tsec, m + 8)?;
                        let (bit_offset, bitfield) = if kflag { (off & 0xff_ffff, off >> 24) } else { (off, 0) };
                        t.members.push(Member { name: u32_at(tsec, m)?, ty: u32_at(tsec, m + 4)?, bit_offset, bitfield });
                    }
                    p += vlen * 12;
                }
                KIND_ENUM => p += vlen * 8,
                13 => p += vlen * 8,  // FUNC_PROTO
                14 => p += 4,         // VAR
                15 => p += vlen * 12, // DATASEC
                17 => p += 4,         // DECL_TAG
                KIND_ENUM64 => p += vlen * 12,
                KIND_PTR | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | 12 | 16
                | KIND_TYPE_TAG => {}
                _ => return Err(BtfError::Malformed("unknown type kind")),
            }
            if p > tsec.len() {
                return Err(BtfError::Malformed("type runs past its section"));
            }
            types.push(t);
        }
        let mut btf = Btf { types, strings, structs: HashMap::new() };
        let mut structs = HashMap::new();
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && t.name != 0 {
                // The first definition with members wins over forward-ish empties.
                let n = btf.name(t.name).to_string();
                let e = structs.entry(n).or_insert(id as u32);
                if btf.types[*e as usize].members.is_empty() && !t.members.is_empty() {
                    *e = id as u32;
                }
            }
        }
        btf.structs = structs;
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// Follow typedefs and qualifiers.
    fn strip(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.ty(id) {
                Some(t) if matches!(t.kind, KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG) => {
                    id = t.size_or_type
                }
                _ => break,
            }
        }
        id
    }

    /// Size in bytes of a type, if it has one. Arrays nest at most 32 deep,
    /// so a malformed array that contains itself has no size.
    pub fn size_of(&self, id: u32) -> Option<u32> {
        self.size_of_at(id, 0)
    }

    fn size_of_at(&self, id: u32, depth: u32) -> Option<u32> {
        if depth > 32 {
            return None;
        }
        let id = self.strip(id);
        let t = self.ty(id)?;
        match t.kind {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 => Some(t.size_or_type),
            KIND_PTR => Some(8),
            KIND_ARRAY => {
                let (elem, n) = t.array?;
                self.size_of_at(elem, depth + 1)?.checked_mul(n)
            }
            _ => None,
        }
    }

    /// Find `member` in composite type `id`, searching anonymous members too.
    /// Returns (bit offset, member type, bitfield width). The search visits at
    /// most `FIND_BUDGET` composites, so hostile BTF (anonymous members that
    /// fan out or loop) costs bounded time; offsets that overflow are no match.
    fn find_member(&self, id: u32, member: &str) -> Option<(u32, u32, u32)> {
        let mut budget = FIND_BUDGET;
        self.find_member_at(id, member, 0, &mut budget)
    }

    fn find_member_at(&self, id: u32, member: &str, depth: u32, budget: &mut u32) -> Option<(u32, u32, u32)> {
        if depth > 8 || *budget == 0 {
            return None;
        }
        *budget -= 1;
        let t = self.ty(self.strip(id))?;
        if !matches!(t.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        for m in &t.members {
            if m.name != 0 && self.name(m.name) == member {
                return Some((m.bit_offset, m.ty, m.bitfield));
            }
        }
        for m in &t.members {
            if m.name == 0 {
                if let Some((off, ty, bf)) = self.find_member_at(m.ty, member, depth + 1, budget) {
                    return Some((m.bit_offset.checked_add(off)?, ty, bf));
                }
            }
        }
        None
    }

    /// Byte offset and size of `path` (e.g. `sock.__sk_common.skc_family`)
    /// from the start of struct `path[0]`.
    pub fn member(&self, path: &str) -> Result<(u32, u32), BtfError> {
        let mut parts = path.split('.');
        let root = parts.next().unwrap_or_default();
        let mut id = *self.structs.get(root).ok_or_else(|| BtfError::NoStruct(root.to_string()))?;
        let mut bits = 0u32;
        let mut last = (0u32, 0u32);
        let mut cur = root.to_string();
        for part in parts {
            let (off, ty, bf) = self
                .find_member(id, part)
                .ok_or_else(|| BtfError::NoMember(cur.clone(), part.to_string()))?;
            if bf != 0 || off % 8 != 0 {
                return Err(BtfError::Bitfield(path.to_string()));
            }
            bits = bits.checked_add(off).ok_or(BtfError::Malformed("member offset overflows"))?;
            id = ty;
            last = (bits / 8, self.size_of(ty).unwrap_or(0));
            cur = format!("{cur}.{part}");
        }
        Ok(last)
    }

    /// Size in bytes of struct `name`.
    pub fn struct_size(&self, name: &str) -> Option<u32> {
        self.size_of(*self.structs.get(name)?)
    }

    /// Like `member`, also checking the member's width.
    pub fn member_sized(&self, path: &str, width: u32) -> Result<u32, BtfError> {
        let (off, size) = self.member(path)?;
        if size != width {
            return Err(BtfError::Width(path.to_string(), size, width));
        }
        Ok(off)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds minimal BTF blobs for tests and fuzz seeds.
    #[derive(Default)]
    pub struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        pub fn new() -> Self {
            Builder { types: vec![], strings: vec![0], next_id: 1 }
        }
        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }
        fn push(&mut self, words: &[u32]) -> u32 {
            for w in words {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }
        pub fn int(&mut self, name: &str, size: u32) -> u32 {
            let n = self.s(name);
            self.push(&[n, KIND_INT << 24, size, size * 8])
        }
        pub fn ptr(&mut self, to: u32) -> u32 {
            self.push(&[0, KIND_PTR << 24, to])
        }
        /// An array of `n` elements of type `elem` (index type: `elem` too; unread).
        pub fn array(&mut self, elem: u32, n: u32) -> u32 {
            self.push(&[0, KIND_ARRAY << 24, 0, elem, elem, n])
        }
        /// The id the next type will get.
        pub fn next(&self) -> u32 {
            self.next_id
        }
        /// members: (name, type, bit offset, bitfield width)
        pub fn composite(&mut self, kind: u32, name: &str, size: u32, members: &[(&str, u32, u32, u32)]) -> u32 {
            let n = self.s(name);
            let kflag = members.iter().any(|m| m.3 != 0);
            let info = (kind << 24) | members.len() as u32 | if kflag { 1 << 31 } else { 0 };
            let mut words = vec![n, info, size];
            for (mn, ty, off, bf) in members {
                let mo = self.s(mn);
                words.extend_from_slice(&[mo, *ty, if kflag { (bf << 24) | off } else { *off }]);
            }
            self.push(&words)
        }
        pub fn strukt(&mut self, name: &str, size: u32, members: &[(&str, u32, u32, u32)]) -> u32 {
            self.composite(KIND_STRUCT, name, size, members)
        }
        pub fn union(&mut self, size: u32, members: &[(&str, u32, u32, u32)]) -> u32 {
            self.composite(KIND_UNION, "", size, members)
        }
        pub fn build(&self) -> Vec<u8> {
            let mut v = vec![0x9f, 0xeb, 1, 0];
            v.extend_from_slice(&24u32.to_le_bytes());
            v.extend_from_slice(&0u32.to_le_bytes());
            v.extend_from_slice(&(self.types.len() as u32).to_le_bytes());
            v.extend_from_slice(&(self.types.len() as u32).to_le_bytes());
            v.extend_from_slice(&(self.strings.len() as u32).to_le_bytes());
            v.extend_from_slice(&self.types);
            v.extend_from_slice(&self.strings);
            v
        }
    }

    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        let u16t = b.int("unsigned short", 2);
        let u32t = b.int("unsigned int", 4);
        let inner = b.strukt("", 8, &[("skc_daddr", u32t, 0, 0), ("skc_rcv_saddr", u32t, 32, 0)]);
        let un = b.union(8, &[("skc_addrpair", u32t, 0, 0), ("", inner, 0, 0)]);
        let common = b.strukt("sock_common", 16, &[("", un, 0, 0), ("skc_family", u16t, 64, 0), ("skc_flags", u16t, 80, 3)]);
        let sock = b.strukt("sock", 32, &[("__sk_common", common, 0, 0), ("sk_protocol", u16t, 128, 0)]);
        let _p = b.ptr(sock);
        b.build()
    }

    #[test]
    fn finds_members_through_anonymous_unions() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member("sock.__sk_common.skc_rcv_saddr").unwrap(), (4, 4));
        assert_eq!(btf.member("sock_common.skc_daddr").unwrap(), (0, 4));
        assert_eq!(btf.member_sized("sock.__sk_common.skc_family", 2).unwrap(), 8);
        assert_eq!(btf.member_sized("sock.sk_protocol", 2).unwrap(), 16);
    }

    #[test]
    fn reports_what_is_missing_or_wrong() {
        let btf = Btf::parse(&sample()).unwrap();
        assert!(matches!(btf.member("task_struct.files"), Err(BtfError::NoStruct(_))));
        assert!(matches!(btf.member("sock.nope"), Err(BtfError::NoMember(..))));
        assert!(matches!(btf.member("sock_common.skc_flags"), Err(BtfError::Bitfield(_))));
        assert!(matches!(btf.member_sized("sock.sk_protocol", 4), Err(BtfError::Width(..))));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = sample();
        for cut in 0..good.len() {
            let _ = Btf::parse(&good[..cut]);
        }
        assert!(Btf::parse(b"garbage").is_err());
        let mut bad = good.clone();
        bad[12] = 0xff; // type_len past the end
        assert!(Btf::parse(&bad).is_err());
    }

    // Hostile BTF: an array whose element is itself used to recurse until
    // the stack overflowed.
    #[test]
    fn an_array_of_itself_has_no_size() {
        let mut b = Builder::new();
        let me = b.next();
        let arr = b.array(me, 4);
        assert_eq!(arr, me);
        let s = b.strukt("s", 16, &[("a", arr, 0, 0)]);
        let btf = Btf::parse(&b.build()).unwrap();
        assert_eq!(btf.size_of(arr), None);
        assert_eq!(btf.member("s.a").unwrap(), (0, 0));
        assert!(btf.size_of(s).is_some());
    }

    #[test]
    fn offsets_that_overflow_are_errors() {
        let mut b = Builder::new();
        let u32t = b.int("unsigned int", 4);
        let inner = b.strukt("inner", 4, &[("x", u32t, 0xffff_fff8, 0)]);
        let _outer = b.strukt("outer", 8, &[("", inner, 0xffff_fff8, 0), ("i", inner, 0xffff_fff8, 0)]);
        let btf = Btf::parse(&b.build()).unwrap();
        // Anonymous member offset + inner offset overflows: no such member.
        assert!(matches!(btf.member("outer.x"), Err(BtfError::NoMember(..))));
        // A path whose offsets sum past u32: malformed, not a panic.
        assert!(matches!(btf.member("outer.i.x"), Err(BtfError::Malformed(_))));
    }

    #[test]
    fn anonymous_members_that_loop_cost_bounded_work() {
        // An anonymous struct that holds itself many times over: without a
        // budget the search would visit 64^9 composites.
        let mut b = Builder::new();
        let me = b.next();
        let members: Vec<(&str, u32, u32, u32)> = (0..64).map(|_| ("", me, 0, 0)).collect();
        let s = b.strukt("loop", 8, &members);
        assert_eq!(s, me);
        let btf = Btf::parse(&b.build()).unwrap();
        let t = std::time::Instant::now();
        assert!(matches!(btf.member("loop.nothing"), Err(BtfError::NoMember(..))));
        assert!(t.elapsed() < std::time::Duration::from_secs(5), "took {:?}", t.elapsed());
    }

    #[test]
    fn reads_the_running_kernel() {
        let data = std::fs::read("/sys/kernel/btf/vmlinux").expect("this machine has vmlinux BTF");
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(btf.member_sized("sock.__sk_common.skc_family", 2).unwrap(), 16);
        btf.member_sized("task_struct.files", 8).unwrap();
        btf.member_sized("tcp_sock.bytes_acked", 8).unwrap();
    }
}
