// Rebuild the programs when bpf-linker changes (a new LLVM may emit different code), as aya's
// template does.
fn main() {
    let linker =
        which::which("bpf-linker").expect("bpf-linker not on PATH: run `cargo xtask setup`");
    println!("cargo:rerun-if-changed={}", linker.display());
}
