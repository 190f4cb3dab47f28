//! The `chargru` binary: parse the command line, run it, report errors in one sentence.

use std::process::ExitCode;

fn main() -> ExitCode {
    match chargru::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
