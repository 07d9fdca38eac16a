//! Learning-rate schedules, as the Hugging Face Trainer computes them
//! (`get_linear_schedule_with_warmup`, `get_cosine_schedule_with_warmup`,
//! `get_constant_schedule_with_warmup`): the multiplier of the peak rate for
//! the optimizer step with 0-based index `step`.

use premem_core::spec::ScheduleSpec;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    pub peak: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub shape: Shape,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Linear,
    Cosine,
    Constant,
}

impl LrSchedule {
    pub fn new(spec: &ScheduleSpec, peak: f64, total_steps: u64) -> LrSchedule {
        let (shape, warmup_steps) = match *spec {
            ScheduleSpec::Linear { warmup_steps } => (Shape::Linear, warmup_steps),
            // transformers: `math.ceil(num_training_steps * warmup_ratio)`.
            ScheduleSpec::Cosine { warmup_fraction } => (
                Shape::Cosine,
                (total_steps as f64 * warmup_fraction).ceil() as u64,
            ),
            ScheduleSpec::Constant { warmup_steps } => (Shape::Constant, warmup_steps),
        };
        LrSchedule {
            peak,
            warmup_steps,
            total_steps,
            shape,
        }
    }

    /// The learning rate of the optimizer step with 0-based index `step`.
    pub fn lr(&self, step: u64) -> f64 {
        self.peak * self.multiplier(step)
    }

    fn multiplier(&self, step: u64) -> f64 {
        let (step, warmup, total) = (
            step as f64,
            self.warmup_steps as f64,
            self.total_steps as f64,
        );
        if step < warmup {
            return step / warmup.max(1.0);
        }
        match self.shape {
            Shape::Constant => 1.0,
            Shape::Linear => ((total - step) / (total - warmup).max(1.0)).max(0.0),
            Shape::Cosine => {
                let progress = (step - warmup) / (total - warmup).max(1.0);
                (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1e-30)
    }

    /// Values computed by hand from the transformers formulas.
    #[test]
    fn linear_with_warmup_matches_hand_computed_values() {
        let s = LrSchedule::new(&ScheduleSpec::Linear { warmup_steps: 20 }, 1e-4, 100);
        for (step, want) in [
            (0, 0.0),
            (1, 5e-6),     // 1/20
            (10, 5e-5),    // 10/20
            (19, 9.5e-5),  // 19/20
            (20, 1e-4),    // (100-20)/80
            (60, 5e-5),    // 40/80
            (99, 1.25e-6), // 1/80
            (100, 0.0),
            (150, 0.0),
        ] {
            assert!(
                close(s.lr(step), want),
                "step {step}: {} != {want}",
                s.lr(step)
            );
        }
    }

    #[test]
    fn cosine_with_warmup_fraction_matches_hand_computed_values() {
        // warmup = ceil(100 * 0.1) = 10
        let s = LrSchedule::new(
            &ScheduleSpec::Cosine {
                warmup_fraction: 0.1,
            },
            2e-5,
            100,
        );
        assert_eq!(s.warmup_steps, 10);
        for (step, want) in [
            (0, 0.0),
            (5, 1e-5),
            (10, 2e-5),
            (55, 1e-5), // progress 0.5: 0.5 * (1 + cos(pi/2))
            (100, 0.0),
        ] {
            assert!(
                close(s.lr(step), want) || (want == 0.0 && s.lr(step).abs() < 1e-20),
                "step {step}: {} != {want}",
                s.lr(step)
            );
        }
        // warmup = ceil(50 * 0.2) = 10; step 20 has progress 10/40 = 0.25: 0.5 * (1 + cos(pi/4))
        let quarter = LrSchedule::new(
            &ScheduleSpec::Cosine {
                warmup_fraction: 0.2,
            },
            1.0,
            50,
        );
        assert!(close(quarter.lr(20), 0.8535533905932737));
        // warmup = ceil(7 * 0.1) = 1
        assert_eq!(
            LrSchedule::new(
                &ScheduleSpec::Cosine {
                    warmup_fraction: 0.1
                },
                1.0,
                7
            )
            .warmup_steps,
            1
        );
    }

    #[test]
    fn constant_with_warmup() {
        let s = LrSchedule::new(&ScheduleSpec::Constant { warmup_steps: 4 }, 3e-4, 10);
        assert!(close(s.lr(2), 1.5e-4));
        assert!(close(s.lr(4), 3e-4) && close(s.lr(9), 3e-4));
        let no_warmup = LrSchedule::new(&ScheduleSpec::Linear { warmup_steps: 0 }, 1.0, 4);
        assert_eq!(
            [0, 1, 2, 3].map(|s| no_warmup.lr(s)),
            [1.0, 0.75, 0.5, 0.25]
        );
    }
}
