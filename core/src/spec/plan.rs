//! The memory plan: the bytes one trainer rank and one evaluator hold on
//! their GPU for a job, computed from the model's config.json and the job's
//! settings before any weights are loaded; which sharding `auto` picks; and
//! whether the job fits at all (`premem plan`, and every place a job starts:
//! `premem train`, `run`, `sweep`, the coordinator's SubmitJob).
//!
//! Model states per parameter, as premem lays them out (trainer/src/optim.rs):
//!
//! | buffer | none | zero1 | zero2 |
//! |---|---|---|---|
//! | weights (model kind: bf16 2 B, fp32 4 B) | w | w | w |
//! | `.grad` bucket (model kind) | w | w | w |
//! | reduced gradient (none, zero1: fp32, bf16 weights only, fp32 weights' `.grad` bucket is it; zero2: the rank's range in the model kind) | 4 | 4 | w/N |
//! | fp32 master (bf16 weights only: fp32 weights are the master) | 4 | 4/N | 4/N |
//! | Adam moments | 8 | 8/N | 8/N |
//!
//! Under zero2 the full `.grad` bucket stays (tch has no per-parameter
//! backward hook to reduce it as backward fills it) and the reduce-scatter,
//! summing in fp32, writes the rank's range in the model's kind.
//!
//! The ZeRO paper (Rajbhandari et al. 2020, §5) counts 2Ψ fp16 weights, 2Ψ
//! fp16 gradients and 12Ψ of optimizer state: 16Ψ, 4Ψ+12Ψ/N, 2Ψ+14Ψ/N and
//! 16Ψ/N for data parallel and stages 1-3. premem's layout keeps what the
//! paper keeps under the same names (weights, bf16 gradients, 12 B of fp32
//! master and moments) and holds one more buffer: the fp32 gradient that
//! the all-reduce runs on and the update reads, or under zero2 the full
//! `.grad` bucket the reduce-scatter reads, which the paper's count leaves
//! out as transient. [`ModelStates::paper_terms`]
//! is premem's bytes in the paper's categories; `premem plan` prints both.

mod shape;

use std::path::PathBuf;

pub use shape::ModelShape;

use crate::spec::{ActivationCheckpointing, ByteSize, JobSpec, Precision, Sharding};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The model's config.json cannot be read or resolved.
    #[error(transparent)]
    Model(#[from] crate::arch::ConfigError),
    /// A size past what premem plans for.
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("the job names no model (model.base or model.config)")]
    NoModel,
}

/// The share of GPU memory the plan leaves free: the CUDA context, NCCL's
/// buffers, cuBLAS workspaces and the caching allocator's fragmentation.
pub const HEADROOM_FRACTION: f64 = 0.10;

/// Elements of the optimizer's update scratch (trainer/src/optim.rs: three
/// chunks of 2^20 fp32 values).
const UPDATE_SCRATCH_ELEMENTS: u64 = 3 << 20;

/// A concrete sharding: what `auto` resolves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    None,
    Zero1,
    Zero2,
}

impl Stage {
    /// Least sharding first: the order `auto` tries.
    pub const ALL: [Stage; 3] = [Stage::None, Stage::Zero1, Stage::Zero2];

    pub fn sharding(self) -> Sharding {
        match self {
            Stage::None => Sharding::None,
            Stage::Zero1 => Sharding::Zero1,
            Stage::Zero2 => Sharding::Zero2,
        }
    }

    /// The stage a setting names; `None` for `auto`.
    pub fn of(sharding: Sharding) -> Option<Stage> {
        match sharding {
            Sharding::None => Some(Stage::None),
            Sharding::Zero1 => Some(Stage::Zero1),
            Sharding::Zero2 => Some(Stage::Zero2),
            Sharding::Auto => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Stage::None => "none",
            Stage::Zero1 => "zero1",
            Stage::Zero2 => "zero2",
        }
    }
}

/// The kind the weights are held in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightKind {
    Bf16,
    Fp32,
}

impl WeightKind {
    /// `train.precision` on a CUDA device (`cuda`) or the CPU: `auto` is
    /// bf16 on CUDA and fp32 on the CPU, as the trainer resolves it.
    pub fn for_precision(precision: Precision, cuda: bool) -> WeightKind {
        match precision {
            Precision::Fp32 => WeightKind::Fp32,
            Precision::Bf16 => WeightKind::Bf16,
            Precision::Auto if cuda => WeightKind::Bf16,
            Precision::Auto => WeightKind::Fp32,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WeightKind::Bf16 => "bf16",
            WeightKind::Fp32 => "fp32",
        }
    }

    pub fn bytes(self) -> u64 {
        match self {
            WeightKind::Bf16 => 2,
            WeightKind::Fp32 => 4,
        }
    }
}

/// One rank's model states in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelStates {
    pub weights: u64,
    /// The `.grad` bucket in the weights' kind.
    pub param_grads: u64,
    /// The reduced gradient apart from the bucket: fp32 and whole under
    /// none and zero1 (0 when the bucket is it), the rank's range in the
    /// weights' kind under zero2.
    pub reduced_grads: u64,
    /// The fp32 master apart from the weights (0 when the weights are it).
    pub master: u64,
    pub moments: u64,
}

/// `total / world`, rounded up: a rank's range of a flat buffer.
fn shard(total: u64, world: u64) -> u64 {
    total.div_ceil(world.max(1))
}

impl ModelStates {
    pub fn new(parameters: u64, kind: WeightKind, stage: Stage, world: u64) -> ModelStates {
        let p = parameters;
        let w = kind.bytes();
        let sharded = |bytes: u64| match stage {
            Stage::None => bytes,
            Stage::Zero1 | Stage::Zero2 => shard(bytes, world),
        };
        let reduced_grads = match (kind, stage) {
            (WeightKind::Fp32, Stage::None | Stage::Zero1) => 0,
            (_, Stage::Zero2) => shard(w * p, world),
            (WeightKind::Bf16, _) => 4 * p,
        };
        ModelStates {
            weights: w * p,
            param_grads: w * p,
            reduced_grads,
            master: if kind == WeightKind::Fp32 {
                0
            } else {
                sharded(4 * p)
            },
            moments: sharded(8 * p),
        }
    }

    pub fn total(&self) -> u64 {
        self.weights + self.param_grads + self.reduced_grads + self.master + self.moments
    }

    /// premem's bytes in the ZeRO paper's three categories: (weights,
    /// gradients the paper counts, optimizer states). The gradient the
    /// paper counts is the bf16 `.grad` bucket under none and zero1, and
    /// the rank's range of the reduced gradient under zero2 (2/N in bf16 as
    /// the paper's fp16); the other gradient buffer is
    /// [`ModelStates::beyond_paper`].
    pub fn paper_terms(&self, stage: Stage) -> (u64, u64, u64) {
        let gradients = match stage {
            Stage::None | Stage::Zero1 => self.param_grads,
            Stage::Zero2 => self.reduced_grads,
        };
        (self.weights, gradients, self.master + self.moments)
    }

    /// The gradient buffer premem holds beyond the paper's count.
    pub fn beyond_paper(&self, stage: Stage) -> u64 {
        let (w, g, o) = self.paper_terms(stage);
        self.total() - (w + g + o)
    }
}

/// The ZeRO paper's model-state bytes per GPU for mixed-precision Adam:
/// stage 0 (data parallel) 16Ψ, 1: 4Ψ + 12Ψ/N, 2: 2Ψ + 14Ψ/N, 3: 16Ψ/N.
pub fn zero_paper_bytes(parameters: u64, zero_stage: u8, world: u64) -> f64 {
    let (p, n) = (parameters as f64, world.max(1) as f64);
    match zero_stage {
        0 => 16.0 * p,
        1 => 4.0 * p + 12.0 * p / n,
        2 => 2.0 * p + 14.0 * p / n,
        _ => 16.0 * p / n,
    }
}

/// What backward keeps per token of one decoder layer, in bytes, for
/// sequences of `seq_len` tokens: the inputs of every matmul and norm and
/// the MLP's intermediates in the weights' kind (4h + 2q + 2kv + 4i
/// elements; two more h for Gemma2's extra norms), each norm's fp32 input,
/// and with eager (soft-capped) attention its score matrices (scores,
/// capped, fp32 softmax, probabilities: heads × seq per token).
pub fn activation_bytes_per_token_layer(shape: &ModelShape, kind: WeightKind, seq_len: u64) -> u64 {
    let s = shape;
    let a = kind.bytes();
    let extra_norm_inputs = (s.norms_per_layer - 2) * s.hidden_size;
    let elements = 4 * s.hidden_size
        + 2 * s.q_dim()
        + 2 * s.kv_dim()
        + 4 * s.intermediate_size
        + extra_norm_inputs;
    let norms = s.norms_per_layer * s.hidden_size * 4;
    let scores = if s.eager_attention {
        s.num_heads
            .saturating_mul(seq_len)
            .saturating_mul(3 * a + 4)
    } else {
        // The flash kernels keep one fp32 log-sum-exp per head.
        s.num_heads * 4
    };
    (elements * a + norms).saturating_add(scores)
}

/// Activations of one micro-batch of `tokens` tokens in sequences of
/// `seq_len`: every layer's under `none`; under `layers` each layer's input
/// (h per token) plus one layer's full activations while it is recomputed.
pub fn activation_bytes(
    shape: &ModelShape,
    kind: WeightKind,
    tokens: u64,
    seq_len: u64,
    checkpointing: ActivationCheckpointing,
) -> u64 {
    // Saturating: a product past 64 bits is a plan that fits nowhere.
    let per_layer = tokens.saturating_mul(activation_bytes_per_token_layer(shape, kind, seq_len));
    match checkpointing {
        ActivationCheckpointing::None => shape.num_layers.saturating_mul(per_layer),
        ActivationCheckpointing::Layers => (shape.num_layers * shape.hidden_size * kind.bytes())
            .saturating_mul(tokens)
            .saturating_add(per_layer),
    }
}

/// fp32 logits over the full vocabulary for `tokens` tokens, and their
/// gradient: both exist when backward starts.
pub fn logits_bytes(shape: &ModelShape, tokens: u64) -> u64 {
    tokens.saturating_mul(shape.vocab_size * 8)
}

mod fit;
mod job;
mod render;

pub use job::{DoesNotFit, EvalLoad, EvaluatorPlan, JobPlan, PlanSettings, RankPlan};

/// The sharding a rank trains with: `sharding` itself, or for `auto` the
/// least the plan says fits `gpu_memory` (the device's total memory). With
/// no memory known (the CPU) `auto` is `none`. Pure: the trainer calls it
/// with the job's shape and settings once it knows its device.
pub fn resolve_sharding(
    shape: &ModelShape,
    settings: &PlanSettings,
    gpu_memory: Option<ByteSize>,
) -> Stage {
    match (Stage::of(settings.sharding), gpu_memory) {
        (Some(stage), _) => stage,
        (None, None) => Stage::None,
        (None, Some(_)) => JobPlan::new(shape, settings.clone(), gpu_memory).stage(),
    }
}

/// [`resolve_sharding`] for a trainer rank that knows its world size, its
/// device (`cuda`) and that device's total memory (`None` on the CPU):
/// sizes the model from its config.json. The one call the trainer needs
/// to resolve `train.sharding = "auto"`.
pub fn resolve_sharding_for_rank(
    spec: &JobSpec,
    world_size: usize,
    cuda: bool,
    gpu_memory: Option<ByteSize>,
) -> Result<Stage, PlanError> {
    if let Some(stage) = Stage::of(spec.train.sharding) {
        return Ok(stage);
    }
    let shape = ModelShape::for_model(&spec.model)?;
    let mut sized = spec.clone();
    sized.cluster.trainers = world_size.max(1);
    let kind = WeightKind::for_precision(spec.train.precision, cuda);
    let settings = PlanSettings::for_job(&sized, kind);
    Ok(resolve_sharding(&shape, &settings, gpu_memory))
}

/// Why a job is not started: its model cannot be sized, or it does not fit.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("job '{job}': sizing its memory: {source}")]
    Plan {
        job: String,
        #[source]
        source: PlanError,
    },
    #[error(transparent)]
    DoesNotFit(#[from] DoesNotFit),
}

/// Checks that a job fits GPUs of `gpu_memory` before anything is loaded:
/// the stage it will train with, or the refusal with the whole plan and
/// the settings that would fit. Nothing is checked (Ok(None)) on the CPU
/// or when no memory is known.
pub fn check_job(
    spec: &JobSpec,
    cuda: bool,
    gpu_memory: Option<ByteSize>,
) -> Result<Option<Stage>, Refusal> {
    if !cuda || gpu_memory.is_none() {
        return Ok(None);
    }
    let shape = ModelShape::for_model(&spec.model).map_err(|source| Refusal::Plan {
        job: spec.run.name.clone(),
        source,
    })?;
    let kind = WeightKind::for_precision(spec.train.precision, cuda);
    let plan = JobPlan::new(&shape, PlanSettings::for_job(spec, kind), gpu_memory);
    Ok(Some(plan.check(&shape, &spec.run.name)?))
}

/// Checks a job against the memory its spec declares (`train.gpu_memory`),
/// where no device can be asked: the coordinator on SubmitJob, a sweep
/// submitted to a remote cluster.
pub fn check_declared(spec: &JobSpec) -> Result<Option<Stage>, Refusal> {
    let memory = spec.train.gpu_memory;
    check_job(spec, spec_wants_cuda(spec, memory.is_some()), memory)
}

/// Whether a job's trainers run on CUDA, as far as the spec says without a
/// device at hand: `cuda`/`cuda:N`, or `auto` when the caller knows a GPU
/// (`gpu_present`).
pub fn spec_wants_cuda(spec: &JobSpec, gpu_present: bool) -> bool {
    match spec.train.device.as_str() {
        "cpu" => false,
        "auto" => gpu_present,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::testing::JobToml;

    const GIB: u64 = 1 << 30;

    fn llama3_8b() -> ModelShape {
        ModelShape::from_config_json(shape::tests::LLAMA3_8B, Path::new("config.json")).unwrap()
    }

    /// The paper's run: batch 128 over 8 ranks, micro-batch 4 x 1024 tokens.
    fn paper_settings(world: u64, sharding: Sharding) -> PlanSettings {
        PlanSettings {
            world_size: world,
            sharding,
            checkpointing: ActivationCheckpointing::Layers,
            micro_batch_size: 4,
            rank_batch: 128 / world,
            max_length: 1024,
            kind: WeightKind::Bf16,
            loss_chunk_tokens: Some(1024),
            eval: Some(EvalLoad {
                batch_size: 16,
                samples: 5,
                sequence: 1024 + 512,
                scored: 1024,
                chunk_tokens: Some(1024),
            }),
        }
    }

    #[test]
    fn the_evaluators_perplexity_logits_are_a_chunk_or_the_whole_batch() {
        let shape = llama3_8b();
        let load = paper_settings(8, Sharding::Auto).eval.unwrap();
        let whole = EvalLoad {
            chunk_tokens: None,
            ..load
        };
        let logits = |load: &EvalLoad| EvaluatorPlan::new(&shape, WeightKind::Bf16, load).logits;
        // fp32 logits and their log-softmax: 8 bytes a vocabulary entry.
        assert_eq!(logits(&load), 1024 * 128_256 * 8);
        assert_eq!(logits(&whole), 16 * 1024 * 128_256 * 8);
        // A chunk larger than the batch is the batch.
        let huge = EvalLoad {
            chunk_tokens: Some(1 << 30),
            ..load
        };
        assert_eq!(logits(&huge), logits(&whole));
    }

    #[test]
    fn bytes_per_parameter_follow_the_optimizer_layout() {
        let per_param = |kind, stage, world| {
            ModelStates::new(1_000_000, kind, stage, world).total() as f64 / 1e6
        };
        // bf16: weights 2 + .grad 2 + fp32 gradient 4 + master 4 + moments 8;
        // zero2's reduced gradient is a bf16 range.
        assert_eq!(per_param(WeightKind::Bf16, Stage::None, 8), 20.0);
        assert_eq!(
            per_param(WeightKind::Bf16, Stage::Zero1, 8),
            2.0 + 2.0 + 4.0 + 12.0 / 8.0
        );
        assert_eq!(
            per_param(WeightKind::Bf16, Stage::Zero2, 8),
            2.0 + 2.0 + 14.0 / 8.0
        );
        // fp32: the weights are the master, the .grad bucket the gradient.
        assert_eq!(per_param(WeightKind::Fp32, Stage::None, 8), 16.0);
        assert_eq!(per_param(WeightKind::Fp32, Stage::Zero1, 8), 8.0 + 1.0);
        assert_eq!(
            per_param(WeightKind::Fp32, Stage::Zero2, 8),
            8.0 + 12.0 / 8.0
        );
    }

    #[test]
    fn the_papers_terms_match_the_zero_formulas_for_llama3_8b() {
        let p = llama3_8b().parameters();
        for (stage, zero) in [(Stage::None, 0), (Stage::Zero1, 1), (Stage::Zero2, 2)] {
            let states = ModelStates::new(p, WeightKind::Bf16, stage, 8);
            let (w, g, o) = states.paper_terms(stage);
            let ours = (w + g + o) as f64;
            // Independent of the code above: the paper's figures by hand.
            let paper = match zero {
                0 => 16.0 * p as f64,
                1 => 4.0 * p as f64 + 12.0 * p as f64 / 8.0,
                _ => 2.0 * p as f64 + 14.0 * p as f64 / 8.0,
            };
            assert_eq!(zero_paper_bytes(p, zero, 8), paper);
            let gap = ours / paper - 1.0;
            assert!(gap.abs() < 1e-6, "{stage:?}: {gap}");
            assert_eq!(
                states.beyond_paper(stage),
                if stage == Stage::Zero2 { 2 * p } else { 4 * p }
            );
        }
    }

    #[test]
    fn activations_per_token_and_layer_from_the_shapes() {
        let shape = llama3_8b();
        // (4h + 2q + 2kv + 4i) bf16 elements + two fp32 norm inputs + the
        // flash kernels' log-sum-exp per head.
        let by_hand = (4 * 4096 + 2 * 4096 + 2 * 1024 + 4 * 14336) * 2 + 2 * 4096 * 4 + 32 * 4;
        assert_eq!(
            activation_bytes_per_token_layer(&shape, WeightKind::Bf16, 1024),
            by_hand
        );
        let full = activation_bytes(
            &shape,
            WeightKind::Bf16,
            4096,
            1024,
            ActivationCheckpointing::None,
        );
        let layers = activation_bytes(
            &shape,
            WeightKind::Bf16,
            4096,
            1024,
            ActivationCheckpointing::Layers,
        );
        assert_eq!(full, 32 * 4096 * by_hand);
        assert_eq!(layers, 32 * 4096 * 4096 * 2 + 4096 * by_hand);
        // Llama-3's full-vocabulary fp32 logits: 0.5 MB a token, twice with the gradient.
        assert_eq!(logits_bytes(&shape, 1), 2 * 128_256 * 4);
    }

    #[test]
    fn auto_picks_the_least_sharding_that_fits_eight_80_gib_gpus() {
        let shape = llama3_8b();
        let memory = Some(ByteSize(80 * GIB));
        let plan = JobPlan::new(&shape, paper_settings(8, Sharding::Auto), memory);
        assert_eq!(plan.stage(), Stage::Zero2);
        assert!(plan.rank(Stage::Zero1).total() > plan.usable().unwrap());
        assert_eq!(plan.check(&shape, "j").unwrap(), Stage::Zero2);
        assert_eq!(
            resolve_sharding(&shape, &paper_settings(8, Sharding::Auto), memory),
            Stage::Zero2
        );
        // On 141 GiB (H200) zero1 fits; without a memory auto is none.
        assert_eq!(
            resolve_sharding(
                &shape,
                &paper_settings(8, Sharding::Auto),
                Some(ByteSize(141 * GIB))
            ),
            Stage::Zero1
        );
        assert_eq!(
            resolve_sharding(&shape, &paper_settings(8, Sharding::Auto), None),
            Stage::None
        );
        assert_eq!(
            resolve_sharding(&shape, &paper_settings(8, Sharding::Zero1), memory),
            Stage::Zero1
        );
    }

    #[test]
    fn a_rank_resolves_auto_from_the_jobs_config_json() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("llama.json");
        std::fs::write(&config, shape::tests::LLAMA3_8B).unwrap();
        let mut spec = JobToml::default()
            .with(&format!(
                "[model]\nconfig = {:?}\ntokenizer = \"tokenizer.json\"\n\
                 [train]\nlr = 1e-5\nschedule = {{ type = \"constant\" }}\nbatch_size = 128\n\
                 activation_checkpointing = \"layers\"",
                config.display()
            ))
            .spec();
        let gpu = Some(ByteSize(80 * GIB));
        assert_eq!(
            resolve_sharding_for_rank(&spec, 8, true, gpu).unwrap(),
            Stage::Zero2
        );
        assert_eq!(
            resolve_sharding_for_rank(&spec, 16, true, gpu).unwrap(),
            Stage::Zero1
        );
        assert_eq!(
            resolve_sharding_for_rank(&spec, 8, false, None).unwrap(),
            Stage::None
        );
        spec.train.sharding = Sharding::Zero1;
        assert_eq!(
            resolve_sharding_for_rank(&spec, 8, true, gpu).unwrap(),
            Stage::Zero1
        );
        spec.train.sharding = Sharding::Auto;
        spec.model.config = Some("absent.json".into());
        let err = resolve_sharding_for_rank(&spec, 8, true, gpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("absent.json"), "{err}");
    }

    #[test]
    fn a_job_that_does_not_fit_names_itself_the_memory_and_what_would_fit() {
        let shape = llama3_8b();
        let memory = Some(ByteSize(80 * GIB));
        let none = JobPlan::new(&shape, paper_settings(8, Sharding::None), memory);
        let err = none.check(&shape, "gsm8k").unwrap_err().to_string();
        assert!(
            err.contains("job 'gsm8k' does not fit in 80.00 GiB"),
            "{err}"
        );
        assert!(err.contains("sharding: none (as set) needs"), "{err}");
        assert!(err.contains("train.sharding = \"zero2\""), "{err}");
        let single = JobPlan::new(&shape, paper_settings(1, Sharding::Auto), memory);
        let err = single.check(&shape, "gsm8k").unwrap_err().to_string();
        assert!(
            err.contains("cluster.trainers = 4 (sharding \"zero2\")"),
            "{err}"
        );
    }
}
