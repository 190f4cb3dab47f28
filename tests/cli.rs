//! The `chargru` binary end to end, and its answers to bad input.

mod common;

use std::fs;
use std::path::Path;

use common::{assert_fails, assert_succeeds, chargru, snapshot, stdout, trained};

#[test]
fn train_generate_eval_info() {
    let (dir, checkpoint) = trained();
    let ck = checkpoint.to_str().unwrap();

    let generate = [
        "generate",
        "--checkpoint",
        ck,
        "--prompt",
        "ROMEO:",
        "--length",
        "80",
        "--seed",
        "5",
        "--device",
        "cpu",
    ];
    let first = chargru(&generate);
    assert_succeeds(&first);
    let text = stdout(&first);
    assert!(text.starts_with("ROMEO:"), "{text}");
    assert_eq!(
        text.trim_end_matches('\n').chars().count(),
        "ROMEO:".len() + 80
    );
    assert_eq!(stdout(&chargru(&generate)), text, "same seed, same text");
    let greedy = chargru(&[
        "generate",
        "--checkpoint",
        ck,
        "--prompt",
        "JULIET",
        "--length",
        "40",
        "--temperature",
        "0",
    ]);
    assert_eq!(
        stdout(&greedy),
        stdout(&chargru(&[
            "generate",
            "--checkpoint",
            ck,
            "--prompt",
            "JULIET",
            "--length",
            "40",
            "--temperature",
            "0",
            "--seed",
            "99"
        ]))
    );

    let text_file = dir.path().join("held-out.txt");
    fs::write(
        &text_file,
        "JULIET: here, my love.\nROMEO: wherefore art thou?\n",
    )
    .unwrap();
    let eval = chargru(&[
        "eval",
        "--checkpoint",
        ck,
        "--text",
        text_file.to_str().unwrap(),
        "--json",
    ]);
    assert_succeeds(&eval);
    let json: serde_json::Value = serde_json::from_str(&stdout(&eval)).unwrap();
    assert_eq!(json["chars"], 50);
    let loss = json["loss"].as_f64().unwrap();
    assert!(loss > 0.0 && loss < 4.0, "{json}");
    assert!((json["bpc"].as_f64().unwrap() - loss / std::f64::consts::LN_2).abs() < 1e-9);
    assert!((json["perplexity"].as_f64().unwrap() - loss.exp()).abs() < 1e-9);

    let info = chargru(&["info", "--checkpoint", ck, "--json"]);
    assert!(info.status.success());
    let json: serde_json::Value = serde_json::from_str(&stdout(&info)).unwrap();
    assert_eq!(json["config"]["hidden_size"], 24);
    assert_eq!(json["training"]["corpus"], "corpus.txt");
    assert!(json["training"]["val_loss"].as_f64().is_some());
    let counted: u64 = json["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["parameters"].as_u64().unwrap())
        .sum();
    assert_eq!(json["parameters"].as_u64().unwrap(), counted);
    let info_text = stdout(&chargru(&["info", "--checkpoint", ck]));
    assert!(info_text.contains("gru.1.weight_h"), "{info_text}");
}

#[test]
fn bad_corpora_are_refused_without_touching_the_output_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("notes.txt"), "keep me").unwrap();
    let before = snapshot(&out);
    let train = |corpus: &Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--corpus",
            corpus.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--overwrite",
        ];
        args.extend_from_slice(extra);
        chargru(&args)
    };

    let missing = dir.path().join("nope.txt");
    assert_fails(&train(&missing, &[]), &["nope.txt", "does not exist"]);

    let empty = dir.path().join("empty.txt");
    fs::write(&empty, "").unwrap();
    assert_fails(&train(&empty, &[]), &["empty.txt", "is empty"]);

    let latin1 = dir.path().join("latin1.txt");
    fs::write(&latin1, b"caf\xe9 au lait").unwrap();
    assert_fails(
        &train(&latin1, &[]),
        &["latin1.txt", "not valid UTF-8", "byte offset 3"],
    );

    let short = dir.path().join("short.txt");
    fs::write(&short, "to be or not to be, that is the question\n").unwrap();
    assert_fails(
        &train(&short, &["--seq-len", "64"]),
        &[
            "short.txt",
            "--seq-len 64",
            "--batch 1 with --seq-len 35 or less",
        ],
    );

    assert_eq!(snapshot(&out), before);
}

#[test]
fn an_existing_run_is_not_overwritten_by_accident() {
    let (_dir, checkpoint) = trained();
    let out = checkpoint.parent().unwrap();
    let before = snapshot(out);
    let corpus = out.parent().unwrap().join("corpus.txt");
    let again = chargru(&[
        "train",
        "--corpus",
        corpus.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "1",
        "--seq-len",
        "32",
        "--batch",
        "4",
    ]);
    assert_fails(&again, &["already holds a run", "--overwrite", "--resume"]);
    assert_eq!(snapshot(out), before);
}

#[test]
fn bad_checkpoints_prompts_and_options_are_refused() {
    let (dir, checkpoint) = trained();
    let ck = checkpoint.to_str().unwrap();
    let generate = |ck: &str, extra: &[&str]| {
        let mut args = vec!["generate", "--checkpoint", ck, "--length", "5"];
        args.extend_from_slice(extra);
        chargru(&args)
    };

    let missing = dir.path().join("missing.safetensors");
    assert_fails(
        &generate(missing.to_str().unwrap(), &[]),
        &["missing.safetensors", "does not exist"],
    );

    let bytes = fs::read(&checkpoint).unwrap();
    for cut in [0, 5, 100, bytes.len() / 2, bytes.len() - 1] {
        let truncated = dir.path().join(format!("cut{cut}.safetensors"));
        fs::write(&truncated, &bytes[..cut]).unwrap();
        assert_fails(
            &generate(truncated.to_str().unwrap(), &[]),
            &[
                &format!("cut{cut}.safetensors"),
                "not a complete safetensors file",
            ],
        );
    }

    let text = dir.path().join("text.safetensors");
    fs::write(&text, "this is just some text, not tensors\n".repeat(10)).unwrap();
    assert_fails(
        &generate(text.to_str().unwrap(), &[]),
        &["text.safetensors", "not a complete safetensors file"],
    );

    assert_fails(
        &generate(ck, &["--prompt", "ROMEO€"]),
        &["prompt", "'€'", "U+20AC", "column 6", "--unknown skip"],
    );
    assert_fails(
        &generate(ck, &["--temperature", "-0.5"]),
        &["--temperature", "-0.5"],
    );
    assert_fails(
        &generate(ck, &["--temperature", "NaN"]),
        &["--temperature", "not a finite number"],
    );
    assert_eq!(
        fs::read(&checkpoint).unwrap(),
        bytes,
        "the checkpoint is untouched"
    );
}
