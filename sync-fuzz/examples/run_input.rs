//! Runs one fuzz input through its check, on stable Rust:
//! `TIDEMARK_FUZZ_TRACE=1 cargo run -p sync-fuzz --example run_input -- replica <file>`.
fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(target), Some(path)) = (args.next(), args.next()) else {
        eprintln!("usage: run_input <request|commit|replica> <file>");
        std::process::exit(2);
    };
    let check = sync_fuzz::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, check)| *check)
        .unwrap_or_else(|| panic!("no target {target:?}"));
    check(&std::fs::read(&path).expect("readable input"));
    println!("{target} {path}: ok");
}
