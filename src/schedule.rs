//! The learning-rate schedule: linear warm-up, then cosine decay to a floor, or constant.

use serde::{Deserialize, Serialize};

/// The shape of the schedule after warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Half a cosine from the peak rate down to the floor over the decay steps.
    Cosine,
    /// The peak rate throughout (after warm-up).
    Constant,
}

/// A learning rate for every step; recorded in a run so a resumed run follows the same curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Cosine or constant.
    pub kind: ScheduleKind,
    /// The peak rate, reached at the end of warm-up.
    pub peak: f64,
    /// The rate the cosine ends at.
    pub floor: f64,
    /// Steps of linear warm-up from 0 to the peak.
    pub warmup_steps: usize,
    /// The step at which the cosine reaches the floor (and stays there).
    pub decay_steps: usize,
    /// With a time budget: the training seconds at which the cosine reaches the floor, if
    /// that comes before `decay_steps` (a run stopped by `--time` still ends annealed).
    #[serde(default)]
    pub decay_seconds: Option<f64>,
}

impl Schedule {
    /// The rate for step `step` (counted from 1), taken after `seconds` of training.
    pub fn lr(&self, step: usize, seconds: f64) -> f64 {
        if step <= self.warmup_steps {
            return self.peak * step as f64 / self.warmup_steps as f64;
        }
        match self.kind {
            ScheduleKind::Constant => self.peak,
            ScheduleKind::Cosine => {
                let span = self.decay_steps.saturating_sub(self.warmup_steps).max(1);
                let by_steps = (step - self.warmup_steps) as f64 / span as f64;
                let by_time = self.decay_seconds.map_or(0.0, |total| seconds / total);
                let progress = by_steps.max(by_time).min(1.0);
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                self.floor + (self.peak - self.floor) * cosine
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_the_floor() {
        let schedule = Schedule {
            kind: ScheduleKind::Cosine,
            peak: 1.0,
            floor: 0.1,
            warmup_steps: 10,
            decay_steps: 110,
            decay_seconds: None,
        };
        assert!((schedule.lr(1, 0.0) - 0.1).abs() < 1e-12);
        assert!((schedule.lr(10, 0.0) - 1.0).abs() < 1e-12);
        assert!((schedule.lr(60, 0.0) - 0.55).abs() < 1e-12, "halfway down");
        assert!((schedule.lr(110, 0.0) - 0.1).abs() < 1e-12);
        assert!(
            (schedule.lr(500, 0.0) - 0.1).abs() < 1e-12,
            "stays at the floor"
        );
        let constant = Schedule {
            kind: ScheduleKind::Constant,
            ..schedule
        };
        assert_eq!(constant.lr(5, 0.0), 0.5);
        assert_eq!(constant.lr(500, 0.0), 1.0);
    }

    #[test]
    fn a_time_budget_ends_the_cosine_when_it_comes_first() {
        let schedule = Schedule {
            kind: ScheduleKind::Cosine,
            peak: 1.0,
            floor: 0.1,
            warmup_steps: 10,
            decay_steps: 1_000_000,
            decay_seconds: Some(60.0),
        };
        assert!(
            (schedule.lr(10, 1.0) - 1.0).abs() < 1e-12,
            "warm-up counts steps"
        );
        assert!(
            (schedule.lr(500, 30.0) - 0.55).abs() < 1e-12,
            "halfway through the time"
        );
        assert!((schedule.lr(900, 60.0) - 0.1).abs() < 1e-12);
        let short = Schedule {
            decay_steps: 110,
            ..schedule
        };
        assert!(
            (short.lr(110, 6.0) - 0.1).abs() < 1e-12,
            "the steps end first"
        );
    }
}
