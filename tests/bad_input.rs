//! Every bad input is answered with one sentence on stderr and a non-zero exit, without a
//! panic and without changing any file in the output directory.

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{assert_fails, chargru, snapshot, trained};
use safetensors::SafeTensors;

/// Runs `chargru train` with `corpus` into a directory holding an earlier run's files, and
/// checks the failure names `expected` and leaves those files as they were.
fn train_fails(corpus: &Path, extra: &[&str], expected: &[&str]) {
    let (dir, checkpoint) = trained();
    let out = checkpoint.parent().unwrap();
    let before = snapshot(out);
    let mut args = vec![
        "train",
        "--corpus",
        corpus.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--overwrite",
        "--steps",
        "5",
    ];
    args.extend_from_slice(extra);
    assert_fails(&chargru(&args), expected);
    assert_eq!(
        snapshot(out),
        before,
        "a failed train changed {}",
        out.display()
    );
    drop(dir);
}

#[test]
fn bad_corpora() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        fs::write(&path, bytes).unwrap();
        path
    };
    train_fails(
        &dir.path().join("missing.txt"),
        &[],
        &["missing.txt", "does not exist"],
    );
    let empty_dir = dir.path().join("nothing");
    fs::create_dir(&empty_dir).unwrap();
    train_fails(&empty_dir, &[], &["nothing", "holds no files"]);
    train_fails(&file("empty.txt", b""), &[], &["empty.txt", "is empty"]);
    train_fails(
        &file("one.txt", &[b'a'; 5000]),
        &[],
        &["one.txt", "only one distinct character"],
    );
    train_fails(
        &file("latin1.txt", b"na\xefve caf\xe9"),
        &[],
        &["latin1.txt", "not valid UTF-8", "byte offset 2", "0xEF"],
    );
    train_fails(
        &file("binary.txt", b"some text\0more text"),
        &[],
        &["binary.txt", "NUL byte", "byte offset 9"],
    );
    train_fails(
        &file("short.txt", b"a short text, far from enough\n"),
        &[],
        &["short.txt", "--seq-len 64", "or less"],
    );
    let huge = dir.path().join("huge.txt");
    fs::File::create(&huge).unwrap().set_len(1 << 40).unwrap(); // sparse: no disk used
    train_fails(&huge, &[], &["huge.txt", "GB of memory", "available"]);
}

/// The tensors and metadata of a good checkpoint, to derive broken ones from.
fn parts(checkpoint: &Path) -> (Vec<(String, Tensor)>, HashMap<String, String>) {
    let bytes = fs::read(checkpoint).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let tensors = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            (
                name,
                Tensor::from_raw_buffer(view.data(), DType::F32, view.shape(), &Device::Cpu)
                    .unwrap(),
            )
        })
        .collect();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    (tensors, header.metadata().clone().unwrap())
}

fn write(path: &Path, tensors: &[(String, Tensor)], metadata: HashMap<String, String>) -> PathBuf {
    safetensors::serialize_to_file(
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        Some(metadata),
        path,
    )
    .unwrap();
    path.to_path_buf()
}

#[test]
fn bad_checkpoints() {
    let (dir, good) = trained();
    let (tensors, metadata) = parts(&good);
    let d = dir.path();
    let check = |path: &Path, expected: &[&str]| {
        let before = fs::read(path).ok();
        for command in [
            &["info", "--checkpoint"][..],
            &["generate", "--length", "3", "--checkpoint"],
        ] {
            let mut args = command.to_vec();
            args.push(path.to_str().unwrap());
            assert_fails(&chargru(&args), expected);
        }
        assert_eq!(fs::read(path).ok(), before, "{} changed", path.display());
    };
    let raw = |name: &str, bytes: &[u8]| {
        let path = d.join(name);
        fs::write(&path, bytes).unwrap();
        path
    };
    let good_bytes = fs::read(&good).unwrap();

    check(
        &d.join("absent.safetensors"),
        &["absent.safetensors", "does not exist"],
    );
    check(
        &raw("empty.safetensors", b""),
        &["empty.safetensors", "not a complete safetensors file"],
    );
    for cut in [7, 8, 64, good_bytes.len() / 3, good_bytes.len() - 4] {
        check(
            &raw(&format!("cut{cut}.safetensors"), &good_bytes[..cut]),
            &["not a complete safetensors file"],
        );
    }
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    check(
        &raw("noise.safetensors", &noise),
        &["noise.safetensors", "not a complete safetensors file"],
    );
    let header = br#"{"head.bias":{"dtype":"F32","shape":[1000000000000],"data_offsets":[0,4000000000000]}}"#;
    let mut huge = (header.len() as u64).to_le_bytes().to_vec();
    huge.extend_from_slice(header);
    huge.extend_from_slice(&[0; 16]);
    check(
        &raw("huge.safetensors", &huge),
        &["huge.safetensors", "not a complete safetensors file"],
    );

    let without = |name: &str| -> Vec<(String, Tensor)> {
        tensors.iter().filter(|(n, _)| n != name).cloned().collect()
    };
    check(
        &write(
            &d.join("missing.safetensors"),
            &without("head.bias"),
            metadata.clone(),
        ),
        &["the tensor head.bias is missing"],
    );
    let mut extra = tensors.clone();
    extra.push((
        "extra.weight".into(),
        Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap(),
    ));
    check(
        &write(&d.join("extra.safetensors"), &extra, metadata.clone()),
        &["\"extra.weight\"", "does not have"],
    );
    let mut wide = without("head.bias");
    wide.push((
        "head.bias".into(),
        Tensor::zeros(999, DType::F32, &Device::Cpu).unwrap(),
    ));
    check(
        &write(&d.join("shape.safetensors"), &wide, metadata.clone()),
        &["head.bias has shape [999]"],
    );
    let mut doubles = without("head.bias");
    let v = tensors
        .iter()
        .find(|(n, _)| n == "head.bias")
        .unwrap()
        .1
        .to_dtype(DType::F64)
        .unwrap();
    doubles.push(("head.bias".into(), v));
    check(
        &write(&d.join("dtype.safetensors"), &doubles, metadata.clone()),
        &["head.bias has dtype F64", "F32, F16 or BF16"],
    );
    let mut nan = without("head.bias");
    nan.push((
        "head.bias".into(),
        (Tensor::zeros(
            tensors
                .iter()
                .find(|(n, _)| n == "head.bias")
                .unwrap()
                .1
                .dims(),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
            / 0.0)
            .unwrap(),
    ));
    check(
        &write(&d.join("nan.safetensors"), &nan, metadata.clone()),
        &["head.bias contains NaN"],
    );

    for key in [
        "chargru.format",
        "chargru.config",
        "chargru.tokenizer",
        "chargru.training",
    ] {
        let mut m = metadata.clone();
        m.remove(key);
        let name = format!("no-{key}.safetensors");
        check(
            &write(&d.join(&name), &tensors, m),
            &[key, "no", "not written by chargru"],
        );
    }
    let edited = |key: &str, value: &str| {
        let mut m = metadata.clone();
        m.insert(key.into(), value.into());
        m
    };
    check(
        &write(
            &d.join("future.safetensors"),
            &tensors,
            edited("chargru.format", "2"),
        ),
        &["chargru.format \"2\"", "only format \"1\""],
    );
    check(
        &write(
            &d.join("config.safetensors"),
            &tensors,
            edited("chargru.config", "{\"vocab_size\":"),
        ),
        &["chargru.config", "malformed"],
    );
    check(
        &write(
            &d.join("training.safetensors"),
            &tensors,
            edited("chargru.training", "[]"),
        ),
        &["chargru.training", "malformed"],
    );
    check(
        &write(
            &d.join("tok.safetensors"),
            &tensors,
            edited("chargru.tokenizer", "not json"),
        ),
        &["chargru.tokenizer is unusable"],
    );
    let other = chargru::CharTokenizer::from_text("abc")
        .unwrap()
        .to_json()
        .unwrap();
    check(
        &write(
            &d.join("vocab.safetensors"),
            &tensors,
            edited("chargru.tokenizer", &other),
        ),
        &["tokenizer has 3 characters", "vocab_size"],
    );
    let huge_config =
        metadata["chargru.config"].replace("\"hidden_size\":24", "\"hidden_size\":99999999999");
    check(
        &write(
            &d.join("dims.safetensors"),
            &tensors,
            edited("chargru.config", &huge_config),
        ),
        &["hidden_size 99999999999, outside"],
    );
}

#[test]
fn bad_flags() {
    let (dir, checkpoint) = trained();
    let ck = checkpoint.to_str().unwrap();
    let out = checkpoint.parent().unwrap();
    let before = snapshot(out);
    let corpus = dir.path().join("corpus.txt");
    let train = |extra: &[&str]| {
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
    for (flag, value, expected) in [
        ("--hidden", "0", "--hidden must be at least 1"),
        ("--layers", "0", "--layers must be at least 1"),
        ("--batch", "0", "--batch must be at least 1"),
        ("--seq-len", "0", "--seq-len must be at least 1"),
        ("--embed", "-4", "--embed"),
        ("--steps", "-1", "--steps"),
        ("--lr", "0", "must be greater than 0"),
        ("--lr", "-0.1", "must be greater than 0"),
        ("--lr", "NaN", "not a finite number"),
        ("--dropout", "1", "below 1"),
        ("--dropout", "-0.2", "at least 0"),
        ("--time", "soon", "not a duration"),
    ] {
        assert_fails(&train(&[flag, value]), &[flag, expected]);
    }
    let file_out = dir.path().join("plain-file");
    fs::write(&file_out, "x").unwrap();
    let args = [
        "train",
        "--corpus",
        corpus.to_str().unwrap(),
        "--out",
        file_out.to_str().unwrap(),
        "--seq-len",
        "32",
        "--batch",
        "4",
    ];
    assert_fails(&chargru(&args), &["plain-file", "is a file"]);
    let inside_file = file_out.join("run");
    let args = [
        "train",
        "--corpus",
        corpus.to_str().unwrap(),
        "--out",
        inside_file.to_str().unwrap(),
        "--seq-len",
        "32",
        "--batch",
        "4",
    ];
    assert_fails(
        &chargru(&args),
        &["cannot create directory", "plain-file/run"],
    );
    assert_eq!(snapshot(out), before);

    for (flag, value, expected) in [
        ("--temperature", "-1", "0 or more"),
        ("--temperature", "nan", "not a finite number"),
        ("--top-p", "0", "above 0 and at most 1"),
        ("--top-p", "1.5", "above 0 and at most 1"),
        ("--top-k", "0", "--top-k"),
        ("--length", "10000001", "limit of 10000000"),
        ("--num-samples", "0", "--num-samples"),
    ] {
        assert_fails(
            &chargru(&["generate", "--checkpoint", ck, flag, value]),
            &[flag, expected],
        );
    }
}

#[test]
fn bad_resumes_and_a_busy_run_directory() {
    let (dir, checkpoint) = trained();
    let run = checkpoint.parent().unwrap();
    let run_arg = run.to_str().unwrap();
    fs::remove_file(run.join("resume.safetensors")).unwrap();
    let before = snapshot(run);
    assert_fails(
        &chargru(&["train", "--resume", run_arg, "--steps", "60"]),
        &["no resume.safetensors"],
    );
    assert_fails(
        &chargru(&["train", "--resume", dir.path().to_str().unwrap()]),
        &["not a chargru run directory"],
    );
    assert_eq!(snapshot(run), before);

    // A lock left by a process that is gone does not block a new run.
    fs::write(run.join("train.lock"), "4000000\n").unwrap();
    let corpus = dir.path().join("corpus.txt");
    let args = [
        "train",
        "--corpus",
        corpus.to_str().unwrap(),
        "--out",
        run_arg,
        "--overwrite",
        "--steps",
        "20000",
        "--seq-len",
        "32",
        "--batch",
        "4",
        "--hidden",
        "24",
        "--log-every",
        "1",
    ];
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_chargru"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(first.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("step") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut lines, &mut line).unwrap() > 0,
            "the first run ended early"
        );
    }
    let second = chargru(&args);
    first.kill().unwrap();
    first.wait().unwrap();
    assert_fails(
        &second,
        &[
            "in use by another `chargru train`",
            &format!("process {}", first.id()),
        ],
    );
}
