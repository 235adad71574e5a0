//! The `lastword` binary.

fn main() {
    println!("lastword {}", env!("CARGO_PKG_VERSION"));
}
