//! `chargru train`: flags, resuming, Ctrl-C, and progress on a terminal or in a log.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use indicatif::{ProgressBar, ProgressStyle};

use super::{non_negative, parse_duration, positive, probability};
use crate::checkpoint::StorageDtype;
use crate::data::Batching;
use crate::device::{select, DeviceChoice};
use crate::preset::Preset;
use crate::run::RunDir;
use crate::schedule::ScheduleKind;
use crate::train::{train, Progress, Stopped, TrainConfig, TrainSummary};
use crate::{input_error, Result};

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub(super) struct TrainArgs {
    /// Start from a named recipe (its model, schedule, time budget and --out); flags given beside it override it.
    #[arg(long, value_enum, conflicts_with = "resume")]
    preset: Option<Preset>,
    /// UTF-8 text file, or a directory of them (read in sorted order), to learn from; the last 10% is validation.
    #[arg(long, default_value = "corpus/tinyshakespeare.txt")]
    corpus: PathBuf,
    /// Run directory: checkpoints, config.json, metrics.jsonl, loss.svg and the resume state.
    #[arg(long, default_value = "checkpoints/tinyshakespeare")]
    out: PathBuf,
    /// Continue the run in this directory (or the directory of this checkpoint) exactly where it stopped.
    #[arg(long, value_name = "DIR_OR_FILE")]
    resume: Option<PathBuf>,
    /// Replace the run already in --out.
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Optimizer steps to reach (with --resume: the total, earlier steps included).
    #[arg(long, default_value_t = TrainConfig::default().steps)]
    steps: usize,
    /// Passes over the training text to make, instead of --steps.
    #[arg(long, conflicts_with = "steps", value_parser = positive)]
    epochs: Option<f64>,
    /// Stop after this much training time, e.g. 90s, 30m, 1h30m; checkpoints are written.
    #[arg(long, value_parser = parse_duration)]
    time: Option<Duration>,
    /// Units in each GRU layer (H).
    #[arg(long, default_value_t = TrainConfig::default().hidden)]
    hidden: usize,
    /// Stacked GRU layers (L).
    #[arg(long, default_value_t = TrainConfig::default().layers)]
    layers: usize,
    /// Size of a character's embedding vector (E).
    #[arg(long, default_value_t = TrainConfig::default().embed)]
    embed: usize,
    /// Characters per training window (T), the span gradients flow back through.
    #[arg(long, default_value_t = TrainConfig::default().seq_len)]
    seq_len: usize,
    /// Windows per step (N).
    #[arg(long, default_value_t = TrainConfig::default().batch)]
    batch: usize,
    /// stateful: each batch row reads its own stream, the hidden state carried between windows; random: windows at random offsets.
    #[arg(long, value_enum, default_value_t = TrainConfig::default().batching)]
    batching: Batching,
    /// Peak AdamW learning rate.
    #[arg(long, default_value_t = TrainConfig::default().lr, value_parser = positive)]
    lr: f64,
    /// Learning rate the cosine decays to [default: --lr / 10].
    #[arg(long, value_parser = non_negative)]
    min_lr: Option<f64>,
    /// Steps of linear warm-up [default: 100, or a tenth of the run if shorter].
    #[arg(long)]
    warmup: Option<usize>,
    /// The learning rate after warm-up: cosine decay to --min-lr over the run, or constant.
    #[arg(long, value_enum, default_value_t = TrainConfig::default().schedule)]
    schedule: ScheduleKind,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = TrainConfig::default().weight_decay, value_parser = non_negative)]
    weight_decay: f64,
    /// Dropout probability between layers and before the head, in [0, 1).
    #[arg(long, default_value_t = TrainConfig::default().dropout, value_parser = probability)]
    dropout: f64,
    /// Scale gradients down to this global L2 norm when they exceed it.
    #[arg(long, default_value_t = TrainConfig::default().grad_clip, value_parser = positive)]
    grad_clip: f64,
    /// Measure the validation loss and write checkpoints every N steps.
    #[arg(long, default_value_t = TrainConfig::default().eval_every)]
    eval_every: usize,
    /// When output is not a terminal, print a progress line every N steps.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..))]
    log_every: u64,
    /// Seed for the initial weights, the batches and dropout: equal seeds give equal runs.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    seed: u64,
    /// The float type best.safetensors and latest.safetensors store their weights in.
    #[arg(long, value_enum, default_value_t = TrainConfig::default().dtype)]
    dtype: StorageDtype,
    /// Print nothing while training.
    #[arg(long)]
    quiet: bool,
    /// Where to compute.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
}

impl TrainArgs {
    /// The preset's configuration (or the defaults) with every flag given on the command line applied.
    fn config(&self, given: impl Fn(&str) -> bool) -> TrainConfig {
        let base = self
            .preset
            .map_or_else(TrainConfig::default, Preset::config);
        macro_rules! flag_or_base {
            ($($field:ident),*) => {
                TrainConfig {
                    $($field: if given(stringify!($field)) { self.$field.clone() } else { base.$field.clone() },)*
                    resume: false,
                    overwrite: self.overwrite,
                    val_streams: base.val_streams,
                }
            };
        }
        flag_or_base!(
            corpus,
            out,
            steps,
            epochs,
            time,
            embed,
            hidden,
            layers,
            seq_len,
            batch,
            batching,
            lr,
            min_lr,
            warmup,
            schedule,
            weight_decay,
            dropout,
            grad_clip,
            eval_every,
            seed,
            dtype
        )
    }
}

pub(super) fn run(args: TrainArgs, matches: &ArgMatches) -> Result<()> {
    let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let config = match &args.resume {
        None => args.config(given),
        Some(path) => resumed_config(path, &args.config(given), given)?,
    };
    let device = select(args.device)?;
    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = Arc::clone(&stop);
    // A second Ctrl-C quits at once: every file is written by rename, so none is left half-written.
    let _ = ctrlc::set_handler(move || {
        if handler_stop.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this step and saving; press Ctrl-C again to quit at once");
    });
    let mut reporter = Reporter::new(&config, &args);
    let summary = train(&config, &device, &stop, |progress| {
        reporter.report(progress)
    });
    reporter.finish();
    let summary = summary?;
    print_summary(&summary, args.quiet);
    Ok(())
}

/// The run's recorded configuration, with what may change between sessions taken from
/// the command line; any other flag given with a different value is an error.
fn resumed_config(
    path: &Path,
    given_config: &TrainConfig,
    given: impl Fn(&str) -> bool,
) -> Result<TrainConfig> {
    let dir = if path.is_file() {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    } else {
        path.to_path_buf()
    };
    let mut config = RunDir::new(&dir).read_config()?;
    if given("out") && given_config.out != dir {
        input_error!(
            "--out {} and --resume {} name different runs; give only --resume",
            given_config.out.display(),
            dir.display()
        );
    }
    let g = given_config;
    let fixed = [
        ("corpus", g.corpus != config.corpus),
        ("hidden", g.hidden != config.hidden),
        ("layers", g.layers != config.layers),
        ("embed", g.embed != config.embed),
        ("seq_len", g.seq_len != config.seq_len),
        ("batch", g.batch != config.batch),
        ("batching", g.batching != config.batching),
        ("lr", g.lr != config.lr),
        ("min_lr", g.min_lr != config.min_lr),
        ("warmup", g.warmup != config.warmup),
        ("schedule", g.schedule != config.schedule),
        ("weight_decay", g.weight_decay != config.weight_decay),
        ("dropout", g.dropout != config.dropout),
        ("grad_clip", g.grad_clip != config.grad_clip),
        ("seed", g.seed != config.seed),
        ("dtype", g.dtype != config.dtype),
    ];
    if let Some((id, _)) = fixed.iter().find(|(id, differs)| *differs && given(id)) {
        input_error!(
            "--{} differs from the run in {} (see its config.json); a resumed run keeps its corpus, model and training settings, so drop the flag or start a new run with another --out",
            id.replace('_', "-"),
            dir.display()
        );
    }
    if given("steps") {
        config.steps = g.steps;
        config.epochs = None;
    }
    if given("epochs") {
        config.epochs = g.epochs;
    }
    if given("eval_every") {
        config.eval_every = g.eval_every;
    }
    config.time = g.time;
    config.out = dir;
    config.resume = true;
    Ok(config)
}

/// Progress as a live bar on a terminal, as plain lines otherwise, or nothing with --quiet.
struct Reporter {
    bar: Option<ProgressBar>,
    plain: bool,
    log_every: usize,
    total_steps: usize,
    smoothed_loss: Option<f64>,
    last_val: Option<f64>,
    time_budget: Option<Duration>,
    started: Instant,
    corpus: String,
    config: TrainConfig,
}

impl Reporter {
    fn new(config: &TrainConfig, args: &TrainArgs) -> Self {
        let terminal = std::io::stdout().is_terminal();
        Self {
            bar: None,
            plain: !args.quiet && !terminal,
            log_every: args.log_every as usize,
            total_steps: 0,
            smoothed_loss: None,
            last_val: None,
            time_budget: None,
            started: Instant::now(),
            corpus: config.corpus.display().to_string(),
            config: config.clone(),
        }
        .with_bar(!args.quiet && terminal)
    }

    fn with_bar(mut self, bar: bool) -> Self {
        if bar {
            self.bar = Some(ProgressBar::hidden().with_prefix("–"));
        }
        self
    }

    /// The bar's look: a run with a time budget fills it with seconds, since its step
    /// count is only a bound.
    fn bar_style(&self) -> ProgressStyle {
        let template = match self.time_budget {
            Some(_) => "[{bar:30.cyan/blue}] step {msg} · val {prefix} · {eta} left",
            None => "[{bar:30.cyan/blue}] {pos}/{len} steps · {msg} · val {prefix} · ETA {eta}",
        };
        ProgressStyle::with_template(template)
            .expect("the template is valid")
            .progress_chars("=> ")
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None if self.plain => say(text),
            None => {}
        }
    }

    fn report(&mut self, progress: &Progress) {
        match *progress {
            Progress::Started {
                chars,
                vocab_size,
                train_chars,
                val_chars,
                parameters,
                start_step,
                total_steps,
                steps_per_epoch,
                time_budget,
            } => {
                self.total_steps = total_steps;
                self.time_budget = time_budget;
                let c = &self.config;
                let resuming = if start_step > 0 {
                    format!("resuming at step {start_step}; ")
                } else {
                    String::new()
                };
                let budget = match time_budget {
                    Some(time) => format!("up to {total_steps} steps in {}", minutes(time)),
                    None => format!("{total_steps} steps"),
                };
                self.line(&format!(
                    "corpus {}: {chars} characters, {vocab_size} distinct; {train_chars} for training, {val_chars} for validation\nmodel: embedding {}, {} GRU layer(s) of {}, {parameters} parameters; {resuming}{budget} of {}×{} characters ({steps_per_epoch} per epoch, {} batching); run directory {}",
                    self.corpus, c.embed, c.layers, c.hidden, c.batch, c.seq_len, format!("{:?}", c.batching).to_lowercase(), c.out.display()
                ));
                self.started = Instant::now();
                if let Some(bar) = &self.bar {
                    bar.set_style(self.bar_style());
                    match time_budget {
                        Some(time) => {
                            bar.set_length(time.as_secs());
                            bar.set_position(0);
                        }
                        None => {
                            bar.set_length(total_steps as u64);
                            bar.set_position(start_step as u64);
                        }
                    }
                    bar.reset_eta();
                    bar.set_draw_target(indicatif::ProgressDrawTarget::stdout());
                }
            }
            Progress::Step {
                step,
                epoch,
                loss,
                grad_norm,
                lr,
                tokens_per_second,
            } => {
                let smoothed = self.smoothed_loss.map_or(loss, |s| 0.95 * s + 0.05 * loss);
                self.smoothed_loss = Some(smoothed);
                let status = format!(
                    "epoch {epoch:.2} · train loss {smoothed:.4} · {tokens_per_second:.0} chars/s · lr {lr:.2e}"
                );
                if let Some(bar) = &self.bar {
                    match self.time_budget {
                        Some(_) => {
                            bar.set_position(self.started.elapsed().as_secs());
                            bar.set_message(format!("{step} · {status}"));
                        }
                        None => {
                            bar.set_position(step as u64);
                            bar.set_message(status);
                        }
                    }
                } else if step % self.log_every == 0 || step == self.total_steps {
                    let val = self
                        .last_val
                        .map_or_else(|| "–".to_string(), |v| format!("{v:.4}"));
                    self.line(&format!(
                        "{} · {status} · val {val} · grad norm {grad_norm:.3}",
                        self.at(step)
                    ));
                }
            }
            Progress::Eval {
                step,
                val_loss,
                best,
                seconds,
            } => {
                self.last_val = Some(val_loss);
                if let Some(bar) = &self.bar {
                    bar.set_prefix(format!("{val_loss:.4}"));
                }
                self.line(&format!(
                    "{} · val loss {val_loss:.4}{} · measured in {seconds:.1}s",
                    self.at(step),
                    if best { " (best so far, saved)" } else { "" }
                ));
            }
        }
    }

    /// Where the run is: the step of the total, or with a time budget, the time left.
    fn at(&self, step: usize) -> String {
        match self.time_budget {
            Some(time) => format!(
                "step {step:>6} · {} left",
                minutes(time.saturating_sub(self.started.elapsed()))
            ),
            None => format!("step {step:>6}/{}", self.total_steps),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}

fn print_summary(summary: &TrainSummary, quiet: bool) {
    let dir = summary.run.display();
    let resume = format!("chargru train --resume {dir}");
    match summary.stopped {
        Stopped::Interrupted => {
            eprintln!(
                "stopped at step {}; checkpoints saved in {dir}; continue with: {resume}",
                summary.step
            );
            return;
        }
        _ if quiet => return,
        Stopped::OutOfTime => say(&format!(
            "time is up at step {}; checkpoints saved in {dir}; continue with: {resume} --time DURATION",
            summary.step
        )),
        Stopped::Finished => say(&format!("done: {} steps", summary.step)),
    }
    say(&format!(
        "best validation loss {:.4} in {dir}/best.safetensors; loss curve {dir}/loss.svg",
        summary.best_val_loss
    ));
    say(&format!(
        "try: cargo run --release -- generate --checkpoint {dir}/best.safetensors --prompt \"ROMEO:\""
    ));
}

/// A duration as minutes and seconds, like `14m05s`.
fn minutes(duration: Duration) -> String {
    let seconds = duration.as_secs();
    format!("{}m{:02}s", seconds / 60, seconds % 60)
}

/// Prints a line of the log; a closed stdout (`chargru train | head`) must not stop training.
fn say(text: &str) {
    let _ = writeln!(std::io::stdout(), "{text}");
}
