//! Link options for the BPF build of the programs.
//!
//! bpf-linker by default asks LLVM to expand memory copies "in order", which
//! turns off LLVM's inline expansion of `memset`: every zeroed array or
//! struct then becomes a call to a byte-at-a-time loop, several per event.
//! Without the option, LLVM writes them as a few word stores.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("bpf") {
        println!("cargo:rustc-link-arg-bins=--disable-expand-memcpy-in-order");
    }
}
