//! The `chargru` command line: argument parsing and the four commands' output.

mod generate;
mod inspect;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::preset::SHIPPED_CHECKPOINT;
use crate::{input_error, Result};
use generate::GenerateArgs;
use inspect::{EvalArgs, InfoArgs};
use train::TrainArgs;

/// chargru: train a character-level GRU language model on a text and generate text with it.
#[derive(Parser, Debug)]
#[command(name = "chargru", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model on a corpus and write checkpoints (runs on corpus/tinyshakespeare.txt with no arguments).
    Train(TrainArgs),
    /// Generate text from a checkpoint, streaming it to stdout.
    Generate(GenerateArgs),
    /// The loss of a checkpoint on a text read as one sequence (nats per character).
    Eval(EvalArgs),
    /// Show a checkpoint's configuration, parameters, vocabulary and training record.
    Info(InfoArgs),
}

/// Parses the process arguments, runs the command and reports any error as one line on stderr.
pub fn main() -> ExitCode {
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches).map(|cli| (cli, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) if !e.use_stderr() => e.exit(), // --help and --version
        Err(e) => {
            eprintln!("{}", one_line(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    match run(cli.command, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The `--checkpoint` given, or the shipped model when the flag is absent.
fn checkpoint_path(given: &Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.clone());
    }
    let shipped = PathBuf::from(SHIPPED_CHECKPOINT);
    if !shipped.is_file() {
        input_error!(
            "no --checkpoint given and no shipped model at {SHIPPED_CHECKPOINT} under {}; run from chargru's project root, train it with `chargru train --preset shakespeare`, or pass --checkpoint PATH",
            std::env::current_dir().map_or_else(|_| ".".into(), |d| d.display().to_string())
        );
    }
    Ok(shipped)
}

/// clap's message without its usage block: the error line and any tip, joined.
fn one_line(message: &str) -> String {
    let kept: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("error:") || line.starts_with("tip:"))
        .collect();
    format!("{}; see --help", kept.join("; "))
}

fn run(command: Command, matches: &ArgMatches) -> Result<()> {
    match command {
        Command::Train(args) => {
            let empty = ArgMatches::default();
            train::run(args, matches.subcommand_matches("train").unwrap_or(&empty))
        }
        Command::Generate(args) => generate::run(args),
        Command::Eval(args) => inspect::run_eval(args),
        Command::Info(args) => inspect::run_info(args),
    }
}

/// A duration such as `90s`, `30m`, `1h30m` or `2h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration; write it like 90s, 30m, 1h30m or 2h");
    let mut seconds = 0u64;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let value: u64 = number.parse().map_err(|_| bad())?;
        seconds = value
            .checked_mul(unit)
            .and_then(|s| seconds.checked_add(s))
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() {
        seconds = seconds
            .checked_add(number.parse::<u64>().map_err(|_| bad())?)
            .ok_or_else(bad)?;
    }
    if seconds == 0 {
        return Err(format!(
            "{text:?} is no time at all; give a positive duration such as 30m"
        ));
    }
    Ok(Duration::from_secs(seconds))
}

fn number(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(format!("{text:?} is not a finite number")),
    }
}

pub(crate) fn positive(text: &str) -> std::result::Result<f64, String> {
    let x = number(text)?;
    if x > 0.0 {
        Ok(x)
    } else {
        Err(format!("{x} must be greater than 0"))
    }
}

pub(crate) fn non_negative(text: &str) -> std::result::Result<f64, String> {
    let x = number(text)?;
    if x >= 0.0 {
        Ok(x)
    } else {
        Err(format!("{x} must be 0 or more"))
    }
}

pub(crate) fn probability(text: &str) -> std::result::Result<f64, String> {
    let x = number(text)?;
    if (0.0..1.0).contains(&x) {
        Ok(x)
    } else {
        Err(format!("{x} must be at least 0 and below 1"))
    }
}

pub(crate) fn top_p(text: &str) -> std::result::Result<f64, String> {
    let x = number(text)?;
    if x > 0.0 && x <= 1.0 {
        Ok(x)
    } else {
        Err(format!("{x} must be above 0 and at most 1"))
    }
}
