//! `chargru train` for real runs: exact resume after Ctrl-C, budgets, divergence,
//! directory corpora, metrics, and checkpoints that survive a crash.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use chargru::preset::Preset;
use chargru::run::RunDir;
use chargru::Checkpoint;
use common::{assert_fails, assert_succeeds, chargru, stdout};
use sha2::{Digest, Sha256};

const TEXT: &str =
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n";

fn corpus(dir: &Path) -> PathBuf {
    let path = dir.join("corpus.txt");
    fs::write(&path, TEXT.repeat(60)).unwrap();
    path
}

/// Training flags for a small, quick model.
fn small(corpus: &Path, out: &Path, steps: &str, batching: &str) -> Vec<String> {
    [
        "train",
        "--corpus",
        corpus.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        steps,
        "--hidden",
        "24",
        "--embed",
        "8",
        "--layers",
        "2",
        "--seq-len",
        "16",
        "--batch",
        "4",
        "--eval-every",
        "50",
        "--log-every",
        "1",
        "--dropout",
        "0.1",
        "--batching",
        batching,
        "--device",
        "cpu",
    ]
    .map(String::from)
    .to_vec()
}

/// `args` with `flag` set to `value`, replacing any earlier value.
fn with(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    match args.iter().position(|a| a == flag) {
        Some(i) => args[i + 1] = value.to_string(),
        None => args.extend([flag.to_string(), value.to_string()]),
    }
    args
}

fn spawn(args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_chargru"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits until the running training logs step `step` or later.
fn wait_for_step(child: &mut Child, step: usize) -> BufReader<std::process::ChildStdout> {
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            lines.read_line(&mut line).unwrap() > 0,
            "training ended before step {step}"
        );
        let logged = line
            .strip_prefix("step")
            .and_then(|rest| rest.trim_start().split('/').next())
            .and_then(|n| n.trim().parse::<usize>().ok());
        if logged.is_some_and(|s| s >= step) {
            return lines;
        }
    }
}

fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let checkpoint = Checkpoint::load(path).unwrap();
    let mut tensors: Vec<_> = checkpoint
        .tensors
        .iter()
        .map(|(name, t)| {
            (
                name.clone(),
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            )
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

#[test]
fn an_interrupted_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one() {
    // The child logs every step into a pipe we read; once the pipe is full (about 650
    // lines) it blocks, so when we signal at step 70 it cannot have reached the end.
    const STEPS: &str = "1200";
    for batching in ["stateful", "random"] {
        let dir = tempfile::tempdir().unwrap();
        let corpus = corpus(dir.path());
        let whole = dir.path().join("whole");
        let output = chargru(
            &small(&corpus, &whole, STEPS, batching)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        assert_succeeds(&output);

        let parts = dir.path().join("parts");
        let mut child = spawn(&small(&corpus, &parts, STEPS, batching));
        let mut rest = wait_for_step(&mut child, 70);
        signal(&child, "-INT");
        std::io::Read::read_to_string(&mut rest, &mut String::new()).unwrap();
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "Ctrl-C must exit 0: {stderr}");
        assert!(
            stderr.contains(&format!(
                "continue with: chargru train --resume {}",
                parts.display()
            )),
            "{stderr}"
        );
        let stopped_at = Checkpoint::load(&RunDir::new(&parts).latest())
            .unwrap()
            .training
            .step;
        assert!(
            stopped_at > 0 && stopped_at < 1200,
            "stopped at {stopped_at}"
        );

        let resume = chargru(&[
            "train",
            "--resume",
            parts.to_str().unwrap(),
            "--log-every",
            "100",
        ]);
        assert_succeeds(&resume);
        assert!(stdout(&resume).contains(&format!("resuming at step {stopped_at}")));

        let (a, b) = (RunDir::new(&whole), RunDir::new(&parts));
        assert_eq!(
            tensors(&a.latest()),
            tensors(&b.latest()),
            "{batching}: final weights differ"
        );
        assert_eq!(
            tensors(&a.best()),
            tensors(&b.best()),
            "{batching}: best weights differ"
        );
        let val = |run: &RunDir| {
            run.read_metrics()
                .unwrap()
                .iter()
                .map(|r| (r.step, r.val_loss))
                .collect::<Vec<_>>()
        };
        assert_eq!(val(&a), val(&b), "{batching}: validation history differs");
    }
}

#[test]
fn resuming_with_another_model_or_corpus_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path());
    let run = dir.path().join("run");
    let args = small(&corpus, &run, "20", "stateful");
    assert!(
        chargru(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .status
            .success()
    );
    let run_arg = run.to_str().unwrap();

    let bigger = chargru(&[
        "train", "--resume", run_arg, "--steps", "40", "--hidden", "32",
    ]);
    assert_fails(&bigger, &["--hidden differs from the run", "config.json"]);
    let done = chargru(&["train", "--resume", run_arg]);
    assert_fails(&done, &["already taken 20 steps", "larger --steps"]);
    fs::write(&corpus, TEXT.repeat(60).replace('F', "Ж")).unwrap();
    let other = chargru(&["train", "--resume", run_arg, "--steps", "40"]);
    assert_fails(&other, &["not the text the run", "vocabulary differs"]);
    let nothing = chargru(&["train", "--resume", dir.path().to_str().unwrap()]);
    assert_fails(&nothing, &["not a chargru run directory"]);
}

#[test]
fn a_time_budget_stops_cleanly_and_saves() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path());
    let run = dir.path().join("run");
    let args = with(small(&corpus, &run, "1000000", "random"), "--time", "2s");
    let output = chargru(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_succeeds(&output);
    assert!(
        stdout(&output).contains("time is up at step"),
        "{}",
        stdout(&output)
    );
    let latest = Checkpoint::load(&RunDir::new(&run).latest()).unwrap();
    assert!(latest.training.step > 0 && latest.training.step < 1_000_000);
    assert!(
        latest.training.val_loss.is_some(),
        "the last save measures the validation loss"
    );
    let last = RunDir::new(&run).read_metrics().unwrap().pop().unwrap();
    assert!(
        last.lr < 2.5e-4,
        "the cosine follows the clock and ends near the floor of 2e-4 when the time is up, not at {}",
        last.lr
    );
    let resume = ["train", "--resume", run.to_str().unwrap()];
    let before = common::snapshot(&run);
    assert_fails(&chargru(&resume), &["used its whole time budget", "--time"]);
    assert_eq!(
        common::snapshot(&run),
        before,
        "a refused resume changes nothing"
    );
    assert_succeeds(&chargru(&[&resume[..], &["--time", "1s"]].concat()));
}

#[test]
fn divergence_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path());
    let run = dir.path().join("run");
    let args = small(&corpus, &run, "200", "stateful");
    let args = with(
        with(with(args, "--lr", "1e30"), "--warmup", "0"),
        "--eval-every",
        "1",
    );
    let output = chargru(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_fails(
        &output,
        &["training diverged at step", "last good loss", "lower --lr"],
    );
    let latest = Checkpoint::load(&RunDir::new(&run).latest()).unwrap();
    assert!(latest.tensors.values().all(|t| {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .all(|v| v.is_finite())
    }));
}

#[test]
fn a_directory_corpus_is_read_in_sorted_order() {
    let dir = tempfile::tempdir().unwrap();
    let texts = dir.path().join("texts");
    fs::create_dir_all(texts.join("b")).unwrap();
    fs::write(texts.join("z.txt"), TEXT.repeat(20)).unwrap();
    fs::write(texts.join("a.txt"), TEXT.to_uppercase().repeat(20)).unwrap();
    fs::write(texts.join("b").join("m.txt"), TEXT.repeat(20)).unwrap();
    fs::write(texts.join(".notes"), "not part of the corpus \u{1F600}").unwrap();
    let run = dir.path().join("run");
    let args = small(&texts, &run, "10", "stateful");
    let output = chargru(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_succeeds(&output);
    let expected = format!(
        "{}{}{}",
        TEXT.to_uppercase().repeat(20),
        TEXT.repeat(20),
        TEXT.repeat(20)
    );
    let record = Checkpoint::load(&RunDir::new(&run).latest())
        .unwrap()
        .training;
    assert_eq!(record.corpus, "texts");
    assert_eq!(
        record.corpus_sha256,
        format!("{:x}", Sha256::digest(expected.as_bytes()))
    );

    fs::write(texts.join("b").join("n.txt"), b"ok\n\xC3\x28 broken").unwrap();
    let bad = chargru(
        &small(&texts, &dir.path().join("run2"), "10", "stateful")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_fails(&bad, &["n.txt", "not valid UTF-8", "byte offset 3"]);
}

#[test]
fn the_run_directory_records_config_metrics_and_a_loss_curve() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path());
    let run_path = dir.path().join("run");
    let args = small(&corpus, &run_path, "120", "stateful");
    assert!(
        chargru(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .status
            .success()
    );
    let run = RunDir::new(&run_path);
    let config: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(run.config()).unwrap()).unwrap();
    assert_eq!(config["hidden"], 24);
    assert_eq!(config["batching"], "stateful");
    let rows = run.read_metrics().unwrap();
    assert_eq!(
        rows.iter().map(|r| r.step).collect::<Vec<_>>(),
        vec![50, 100, 120]
    );
    for row in &rows {
        assert_eq!(row.tokens, (row.step * 4 * 16) as u64);
        assert!(row.train_loss.unwrap() > 0.0 && row.val_loss.unwrap() > 0.0);
        assert!(row.lr > 0.0 && row.grad_norm > 0.0 && row.elapsed_seconds > 0.0);
    }
    assert!(rows[2].lr < rows[0].lr, "cosine decay");
    let svg = fs::read_to_string(run.plot()).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("validation") && svg.contains("<polyline"),
        "{svg}"
    );
}

#[test]
fn killing_training_at_any_moment_leaves_loadable_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path());
    let run_path = dir.path().join("run");
    // --overwrite: a round killed before its first checkpoint leaves a config.json behind.
    let mut args = with(
        small(&corpus, &run_path, "100000", "stateful"),
        "--eval-every",
        "1",
    );
    args.push("--overwrite".into());
    let run = RunDir::new(&run_path);
    let resume: Vec<String> = [
        "train",
        "--resume",
        run_path.to_str().unwrap(),
        "--eval-every",
        "1",
        "--log-every",
        "1",
    ]
    .map(String::from)
    .to_vec();
    let mut last_step = 0;
    for (round, wait_ms) in [130u64, 370, 610, 290, 845, 455, 205, 730, 520, 380]
        .into_iter()
        .enumerate()
    {
        let mut child = spawn(&args);
        std::thread::sleep(std::time::Duration::from_millis(wait_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        if !run.latest().exists() {
            continue;
        }
        let latest =
            Checkpoint::load(&run.latest()).unwrap_or_else(|e| panic!("round {round}: {e}"));
        Checkpoint::load(&run.best()).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let state = run
            .load_resume()
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(
            state.record.step >= last_step,
            "round {round}: the run went back"
        );
        assert!(latest.training.step > 0);
        last_step = state.record.step;
        // From now on every round resumes the run the previous one left.
        args = resume.clone();
    }
    assert!(
        run.latest().exists(),
        "no checkpoint was written in any round"
    );
}

#[test]
fn a_preset_fills_in_what_the_flags_leave_out() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus(dir.path());
    let run = dir.path().join("run");
    let args = with(
        small(&corpus, &run, "3", "stateful"),
        "--preset",
        "shakespeare",
    );
    let output = chargru(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_succeeds(&output);

    let given = chargru::TrainConfig {
        corpus: corpus.clone(),
        out: run.clone(),
        steps: 3,
        hidden: 24,
        embed: 8,
        layers: 2,
        seq_len: 16,
        batch: 4,
        eval_every: 50,
        dropout: 0.1,
        ..Preset::Shakespeare.config()
    };
    let recorded = RunDir::new(&run).read_config().unwrap();
    assert_eq!(
        recorded, given,
        "flags given win, the preset supplies the rest"
    );
    assert!(recorded.time.is_some(), "the default has no time budget");

    let bytes = fs::read(RunDir::new(&run).best()).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(
        file.tensors()
            .iter()
            .all(|(_, view)| view.dtype() == safetensors::Dtype::F16),
        "the preset stores its checkpoints as f16"
    );
    Checkpoint::load(&RunDir::new(&run).best()).unwrap();
}
