//! `chargru generate` and `chargru eval` options, through the built binary.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{assert_succeeds, chargru, stdout, trained};

#[test]
fn stop_text_ends_a_sample_right_after_it_appears() {
    let (_dir, checkpoint) = trained();
    let ck = checkpoint.to_str().unwrap();
    let output = chargru(&[
        "generate",
        "--checkpoint",
        ck,
        "--prompt",
        "ROMEO:",
        "--length",
        "300",
        "--temperature",
        "1",
        "--seed",
        "3",
        "--stop",
        "e",
        "--quiet",
    ]);
    assert!(output.status.success());
    let text = stdout(&output);
    let generated = text.strip_suffix('\n').unwrap();
    assert!(generated.ends_with('e'), "{generated:?}");
    assert_eq!(generated.matches('e').count(), 1, "{generated:?}");
}

#[test]
fn quiet_prints_only_the_generated_text_and_samples_are_separated() {
    let (_dir, checkpoint) = trained();
    let ck = checkpoint.to_str().unwrap();
    let quiet = chargru(&[
        "generate",
        "--checkpoint",
        ck,
        "--prompt",
        "ROMEO:",
        "--length",
        "25",
        "--seed",
        "1",
        "--quiet",
    ]);
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    let loud = chargru(&[
        "generate",
        "--checkpoint",
        ck,
        "--prompt",
        "ROMEO:",
        "--length",
        "25",
        "--seed",
        "1",
    ]);
    assert_eq!(stdout(&loud), format!("ROMEO:{}", stdout(&quiet)));
    assert!(String::from_utf8_lossy(&loud.stderr).contains("chars/s"));

    let args = [
        "generate",
        "--checkpoint",
        ck,
        "--prompt",
        "JULIET:",
        "--length",
        "30",
        "--seed",
        "4",
        "--num-samples",
        "3",
    ];
    let many = stdout(&chargru(&args));
    for s in 1..=3 {
        assert!(
            many.contains(&format!("──── sample {s} of 3 ────\nJULIET:")),
            "{many}"
        );
    }
    assert_eq!(stdout(&chargru(&args)), many, "same seed, same samples");
}

#[test]
fn unknown_prompt_characters_can_be_skipped_with_a_warning() {
    let (_dir, checkpoint) = trained();
    let ck = checkpoint.to_str().unwrap();
    let skip = [
        "generate",
        "--checkpoint",
        ck,
        "--prompt",
        "RO€MEO:",
        "--length",
        "10",
        "--temperature",
        "0",
        "--unknown",
        "skip",
    ];
    let output = chargru(&skip);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warning: skipped 1 prompt character(s)")
            && stderr.contains("'€' (line 1, column 3)"),
        "{stderr}"
    );
    let clean = chargru(&[
        "generate",
        "--checkpoint",
        ck,
        "--prompt",
        "ROMEO:",
        "--length",
        "10",
        "--temperature",
        "0",
    ]);
    assert_eq!(stdout(&output), stdout(&clean));
}

#[test]
fn interactive_mode_continues_each_line_of_stdin() {
    let (_dir, checkpoint) = trained();
    let ck = checkpoint.to_str().unwrap();
    let greedy = [
        "--checkpoint",
        ck,
        "--length",
        "30",
        "--temperature",
        "0",
        "--quiet",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_chargru"))
        .arg("generate")
        .args(greedy)
        .arg("--interactive")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"ROMEO:\nJULIET: here\n\nnever read\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_succeeds(&output);
    let one = |prompt: &str| {
        let mut args = vec!["generate", "--prompt", prompt];
        args.extend_from_slice(&greedy);
        stdout(&chargru(&args))
    };
    assert_eq!(stdout(&output), one("ROMEO:") + &one("JULIET: here"));
}

#[test]
fn eval_of_the_validation_split_equals_eval_of_that_text() {
    let (dir, checkpoint) = trained();
    let ck = checkpoint.to_str().unwrap();
    let corpus = dir.path().join("corpus.txt");
    let text = std::fs::read_to_string(&corpus).unwrap();
    let chars: Vec<char> = text.chars().collect();
    let val: String = chars[chars.len() * 9 / 10..].iter().collect();
    let val_file = dir.path().join("val.txt");
    std::fs::write(&val_file, &val).unwrap();

    let by_split = chargru(&[
        "eval",
        "--checkpoint",
        ck,
        "--split",
        "val",
        "--corpus",
        corpus.to_str().unwrap(),
        "--json",
    ]);
    let by_text = chargru(&[
        "eval",
        "--checkpoint",
        ck,
        "--text",
        val_file.to_str().unwrap(),
        "--json",
    ]);
    assert_succeeds(&by_split);
    assert_eq!(stdout(&by_split), stdout(&by_text));
    let json: serde_json::Value = serde_json::from_str(&stdout(&by_split)).unwrap();
    assert_eq!(
        json["chars"].as_u64().unwrap() as usize,
        val.chars().count()
    );
}
