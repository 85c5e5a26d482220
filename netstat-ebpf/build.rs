use which::which;

/// Rebuild when bpf-linker changes (it is an undeclared dependency of this crate).
fn main() {
    match which("bpf-linker") {
        Ok(p) => println!("cargo:rerun-if-changed={}", p.display()),
        Err(e) => println!("cargo:warning=bpf-linker not found ({e}); run `cargo xtask build`"),
    }
}
