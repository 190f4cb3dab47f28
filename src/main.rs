//! The `chargru` binary.

fn main() -> std::process::ExitCode {
    chargru::cli::main()
}
