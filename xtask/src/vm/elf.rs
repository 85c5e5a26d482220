//! Whether an executable runs without a dynamic loader (the guest has none):
//! a look at its ELF program headers.
use std::{fs, path::Path};

/// An ELF file without a PT_INTERP program header runs without a dynamic loader.
pub fn is_static_elf(path: &Path) -> bool {
    let Ok(data) = fs::read(path) else { return false };
    elf_is_static(&data).unwrap_or(false)
}

pub fn elf_is_static(d: &[u8]) -> Option<bool> {
    if d.get(..5)? != b"\x7fELF\x02" {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(d.get(o..o + 2)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(d.get(o..o + 8)?.try_into().ok()?));
    let phoff = u64_at(0x20)? as usize;
    let phentsize = u16_at(0x36)? as usize;
    let phnum = u16_at(0x38)? as usize;
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        let p_type = u32::from_le_bytes(d.get(o..o + 4)?.try_into().ok()?);
        if p_type == 3 {
            return Some(false);
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_is_an_elf() {
        let exe = std::env::current_exe().unwrap();
        assert!(elf_is_static(&fs::read(exe).unwrap()).is_some());
    }
}
