#![no_main]
//! The BTF walker on arbitrary bytes: errors, never panics or hangs.
use libfuzzer_sys::fuzz_target;
use netstat_user::tracer::btf::Btf;

fuzz_target!(|data: &[u8]| {
    if let Ok(btf) = Btf::parse(data) {
        for path in ["sock.__sk_common.skc_family", "task_struct.files", "a.b.c.d", "net.ns.inum"] {
            let _ = btf.member(path);
            let _ = btf.member_sized(path, 8);
        }
    }
});
