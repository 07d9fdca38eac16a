//! The plan as text: one rank's bytes per sharding, the ZeRO paper's
//! figures beside premem's, the evaluator, and the choice.

use std::fmt::Write;

use super::job::{EvaluatorPlan, JobPlan};
use super::{ByteSize, HEADROOM_FRACTION, ModelStates, Stage, zero_paper_bytes};
use crate::spec::ActivationCheckpointing;

/// Bytes in GiB, two decimals.
pub fn gib(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / (1u64 << 30) as f64)
}

fn row(out: &mut String, label: &str, values: impl IntoIterator<Item = String>) {
    let _ = write!(out, "  {label:<34}");
    for v in values {
        let _ = write!(out, "{v:>10}");
    }
    out.push('\n');
}

/// One buffer of [`ModelStates`].
type StateField = fn(&ModelStates) -> u64;

pub fn ranks_table(plan: &JobPlan) -> String {
    let mut out = String::from("per trainer rank, GiB\n");
    row(
        &mut out,
        "sharding",
        Stage::ALL.map(|s| s.name().to_string()),
    );
    let bytes = |f: &dyn Fn(&super::job::RankPlan) -> u64| plan.ranks.map(|r| gib(f(&r)));
    let states: [(&str, StateField); 5] = [
        ("weights", |s| s.weights),
        (".grad bucket (weights' kind)", |s| s.param_grads),
        ("reduced gradient", |s| s.reduced_grads),
        ("fp32 master", |s| s.master),
        ("Adam moments (fp32)", |s| s.moments),
    ];
    for (label, get) in states {
        row(&mut out, label, bytes(&|r| get(&r.states)));
    }
    row(&mut out, "model states", bytes(&|r| r.states.total()));
    let (this, other) = match plan.settings.checkpointing {
        ActivationCheckpointing::Layers => {
            ("activations (checkpointed)", "  (without checkpointing)")
        }
        ActivationCheckpointing::None => ("activations", "  (checkpointing layers)"),
    };
    row(&mut out, this, bytes(&|r| r.activations));
    row(&mut out, other, bytes(&|r| r.activations_other));
    row(&mut out, "logits, chunked loss", bytes(&|r| r.logits_chunk));
    row(&mut out, "  (whole micro-batch)", bytes(&|r| r.logits_full));
    row(&mut out, "update scratch", bytes(&|r| r.scratch));
    row(&mut out, "total", bytes(&|r| r.total()));
    if let Some(usable) = plan.usable() {
        let fits = plan
            .ranks
            .map(|r| if r.total() <= usable { "yes" } else { "no" }.to_string());
        row(&mut out, &format!("fits in {} GiB", gib(usable)), fits);
    }
    out
}

/// The ZeRO paper's model states per GPU beside premem's in the paper's
/// categories, and the gradient buffer premem holds beyond them.
pub fn paper_table(plan: &JobPlan) -> String {
    let n = plan.settings.world_size;
    let p = plan.parameters;
    let mut out = format!(
        "model states vs the ZeRO paper (16Ψ, 4Ψ+12Ψ/N, 2Ψ+14Ψ/N; Ψ = {:.3} B, N = {n}), GiB\n",
        p as f64 / 1e9
    );
    row(
        &mut out,
        "sharding",
        Stage::ALL.map(|s| s.name().to_string()),
    );
    let paper = Stage::ALL.map(|s| zero_paper_bytes(p, s as u8, n));
    let ours = plan.ranks.map(|r| {
        let (w, g, o) = r.states.paper_terms(r.stage);
        w + g + o
    });
    row(&mut out, "ZeRO formula", paper.map(|b| gib(b as u64)));
    row(&mut out, "premem, the paper's terms", ours.map(gib));
    let diff = std::array::from_fn::<_, 3, _>(|i| {
        format!("{:+.1}%", (ours[i] as f64 / paper[i] - 1.0) * 100.0)
    });
    row(&mut out, "difference", diff);
    row(
        &mut out,
        "premem's extra gradient buffer",
        plan.ranks.map(|r| gib(r.states.beyond_paper(r.stage))),
    );
    out += "  (the paper counts one gradient: premem's bf16 .grad bucket under none and zero1 and its\n   bf16 range of the reduced gradient under zero2; the extra buffer is the fp32 gradient the\n   all-reduce runs on, or under zero2 the full .grad bucket backward fills)\n";
    out
}

pub fn evaluator_lines(plan: &JobPlan, e: &EvaluatorPlan) -> String {
    let mut out = String::from("per evaluator, GiB\n");
    let load = plan.settings.eval.expect("an evaluator plan has a load");
    row(&mut out, "sampler weights", [gib(e.weights)]);
    row(
        &mut out,
        &format!(
            "KV cache ({} x {} rows x {} tok)",
            load.batch_size, load.samples, load.sequence
        ),
        [gib(e.kv_cache)],
    );
    row(&mut out, "logits", [gib(e.logits)]);
    row(&mut out, "total", [gib(e.total())]);
    if let Some(usable) = plan.usable() {
        let fits = if e.total() <= usable { "yes" } else { "no" };
        row(
            &mut out,
            &format!("fits in {} GiB", gib(usable)),
            [fits.to_string()],
        );
    }
    out
}

pub fn choice_line(plan: &JobPlan) -> String {
    let stage = plan.stage();
    let total = plan.rank(stage).total();
    let fits = plan.usable().is_none_or(|usable| total <= usable);
    let how = match Stage::of(plan.settings.sharding) {
        Some(_) => "as set",
        None if fits => "auto: the least sharding that fits",
        None => "auto: none fits, the most sharded",
    };
    match plan.usable() {
        Some(usable) if total <= usable => format!(
            "sharding: {} ({how}), {} GiB of {} GiB per rank\n",
            stage.name(),
            gib(total),
            gib(usable)
        ),
        Some(usable) => format!(
            "sharding: {} ({how}) needs {} GiB per rank, {} GiB usable: does not fit\n",
            stage.name(),
            gib(total),
            gib(usable)
        ),
        None => format!(
            "sharding: {} ({how}); no GPU memory known (give --gpu-memory or train.gpu_memory) to check the fit\n",
            stage.name()
        ),
    }
}

impl JobPlan {
    pub(super) fn budget(&self) -> String {
        match (self.gpu_memory, self.usable()) {
            (Some(m), Some(u)) => format!(
                "{m} per GPU ({} usable, {:.0} % kept free)",
                ByteSize(u),
                HEADROOM_FRACTION * 100.0
            ),
            _ => "an unknown GPU memory".into(),
        }
    }

    /// The plan as `premem plan` prints it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let s = &self.settings;
        let _ = writeln!(
            out,
            "model: {:.3} B parameters, {} weights; {} trainer rank(s), micro-batch {} x {} tokens, activation checkpointing {}",
            self.parameters as f64 / 1e9,
            s.kind.name(),
            s.world_size,
            s.micro_batch_size.min(s.rank_batch.max(1)),
            s.max_length,
            match s.checkpointing {
                ActivationCheckpointing::None => "none",
                ActivationCheckpointing::Layers => "layers",
            },
        );
        if self.gpu_memory.is_some() {
            let _ = writeln!(out, "GPU memory: {}", self.budget());
        }
        out += &ranks_table(self);
        out += &paper_table(self);
        if let Some(e) = &self.evaluator {
            out += &evaluator_lines(self, e);
        }
        out += &choice_line(self);
        out
    }
}
