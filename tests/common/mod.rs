//! Helpers shared by the tests that run the `chargru` binary.
#![allow(dead_code)] // Each test file uses its own subset.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn chargru(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chargru"))
        .args(args)
        .output()
        .expect("the chargru binary runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Asserts that the command succeeded, showing its stderr if not.
pub fn assert_succeeds(output: &Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Asserts a failure reported as one line on stderr that contains every piece of `expected`.
pub fn assert_fails(output: &Output, expected: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "succeeded; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    for piece in expected {
        assert!(stderr.contains(piece), "{piece:?} missing from: {stderr}");
    }
}

/// Every file under `dir` with its bytes, to show a failed command changed nothing.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

/// A tiny trained run: (temp dir, checkpoint path).
pub fn trained() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    fs::write(
        &corpus,
        "ROMEO: wherefore art thou?\nJULIET: here, my love.\n".repeat(40),
    )
    .unwrap();
    let out = dir.path().join("run");
    let args = [
        "train",
        "--corpus",
        corpus.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "30",
        "--hidden",
        "24",
        "--embed",
        "8",
        "--layers",
        "2",
        "--seq-len",
        "32",
        "--batch",
        "4",
        "--eval-every",
        "15",
        "--log-every",
        "10",
        "--device",
        "cpu",
    ];
    let output = chargru(&args);
    assert_succeeds(&output);
    let log = stdout(&output);
    assert!(log.contains("val loss"), "{log}");
    assert!(log.contains("train loss"), "{log}");
    assert!(out.join("latest.safetensors").is_file());
    let best = out.join("best.safetensors");
    assert!(best.is_file());
    (dir, best)
}
