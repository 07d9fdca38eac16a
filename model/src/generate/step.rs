//! One token per row, chosen on the device: argmax when greedy, else a draw
//! from the temperature-scaled, top-p-truncated distribution by inverse CDF
//! with the row's uniform, walking the nucleus in token-id order (near ties
//! between probabilities, whose sorted order floating-point noise can swap,
//! then cannot change which token a uniform selects).
//!
//! The nucleus is found among the `CANDIDATES` most probable tokens (a top-k,
//! not a sort of the whole vocabulary); a row whose candidates hold less than
//! top-p of the mass is flagged (`covered` false), and its caller redoes the
//! step with [`Nucleus::FullSort`]: the same nucleus, the same draw.
//!
//! Nothing here reads from the device or sends to it: the caller reads the
//! [`Picked`] tensors back once (`tests/sync_free.rs` checks the file).

use premem_core::SamplingSpec;
use tch::{Kind, Tensor};

/// How many of the most probable tokens the nucleus is looked for in.
pub(super) const CANDIDATES: i64 = 64;

/// Where the nucleus is looked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Nucleus {
    /// Among the top [`CANDIDATES`], flagging rows whose nucleus is larger.
    Candidates,
    /// In the whole vocabulary, sorted.
    FullSort,
}

/// A step's choice, on the device, `[rows]` each.
pub(super) struct Picked {
    pub tokens: Tensor,
    /// Log-probability of each token at temperature 1, no top-p.
    pub logprobs: Tensor,
    /// Whether the row's nucleus was inside the candidates (always true for
    /// greedy decoding and for the full sort).
    pub covered: Tensor,
}

impl Picked {
    /// Tokens, log-probabilities and coverage in one `[3, rows]` f64 tensor,
    /// for one read-back (token ids are exact in f64).
    pub(super) fn packed(&self) -> Tensor {
        Tensor::stack(
            &[
                self.tokens.to_kind(Kind::Double),
                self.logprobs.to_kind(Kind::Double),
                self.covered.to_kind(Kind::Double),
            ],
            0,
        )
    }
}

/// Picks a token per row of `logits` `[rows, vocab]`; `uniforms` `[rows]`
/// (absent when greedy).
pub(super) fn pick(
    logits: &Tensor,
    uniforms: Option<&Tensor>,
    params: &SamplingSpec,
    nucleus: Nucleus,
) -> Picked {
    let logits = logits.to_kind(Kind::Float);
    let rows = logits.size()[0];
    let all = || Tensor::ones([rows], (Kind::Bool, logits.device()));
    let (tokens, covered) = match uniforms {
        None => (logits.argmax(-1, false), all()),
        Some(u) => {
            let probs = (&logits / params.temperature).softmax(-1, Kind::Float);
            let vocab = probs.size()[1];
            if params.top_p >= 1.0 {
                let index = inverse_cdf(&probs, &probs.ones_like(), u);
                (index.squeeze_dim(1), all())
            } else if nucleus == Nucleus::FullSort || vocab <= CANDIDATES {
                (full_sort(&probs, u, params.top_p), all())
            } else {
                candidates(&probs, u, params.top_p)
            }
        }
    };
    let logprobs = logits
        .log_softmax(-1, Kind::Float)
        .gather(1, &tokens.unsqueeze(1), false)
        .squeeze_dim(1);
    Picked {
        tokens,
        logprobs,
        covered,
    }
}

/// The nucleus in sorted order over the whole vocabulary: a token is kept
/// while the mass before it is below `top_p` (the first always).
fn full_sort(probs: &Tensor, u: &Tensor, top_p: f64) -> Tensor {
    let (sorted, order) = probs.sort(-1, true);
    let before = sorted.cumsum(-1, Kind::Float) - &sorted;
    let keep = probs
        .zeros_like()
        .scatter(1, &order, &before.lt(top_p).to_kind(Kind::Float));
    inverse_cdf(&(probs * &keep), &keep, u).squeeze_dim(1)
}

/// The same nucleus among the top [`CANDIDATES`] (sorted by probability,
/// then put back in id order for the draw), and whether it fit: it did when
/// the candidates' mass reached `top_p`, as then the next token is out.
fn candidates(probs: &Tensor, u: &Tensor, top_p: f64) -> (Tensor, Tensor) {
    let (top, ids) = probs.topk(CANDIDATES, -1, true, true);
    let cumulative = top.cumsum(-1, Kind::Float);
    let covered = cumulative.select(1, CANDIDATES - 1).ge(top_p);
    let keep = (cumulative - &top).lt(top_p).to_kind(Kind::Float);
    let (ids_in_order, order) = ids.sort(-1, false);
    let keep = keep.gather(1, &order, false);
    let mass = top.gather(1, &order, false) * &keep;
    let index = inverse_cdf(&mass, &keep, u);
    (
        ids_in_order.gather(1, &index, false).squeeze_dim(1),
        covered,
    )
}

/// The index (`[rows, 1]`) a uniform selects from the kept `mass` (`[rows,
/// n]`, zero where `keep` is), in its order.
fn inverse_cdf(mass: &Tensor, keep: &Tensor, u: &Tensor) -> Tensor {
    let cdf = mass.cumsum(-1, Kind::Float);
    let total = cdf.select(1, -1).unsqueeze(1);
    let target = u.unsqueeze(1) * &total;
    // Rounding can put the target at the very end: take the last kept
    // token then, never one outside the nucleus.
    let last_kept = keep.cumsum(-1, Kind::Float).argmax(-1, true);
    target
        .searchsorted(&cdf, false, true, "right", None::<Tensor>)
        .minimum(&last_kept)
}
