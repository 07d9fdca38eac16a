//! The shared decoder layers. Read beside transformers' `modeling_llama.py`
//! and `modeling_gemma2.py`: the same steps in the same order, with the
//! family switches of [`ModelConfig`] where Gemma2 differs.
//!
//! Variables are created under `nn::Path`s equal to the Hugging Face tensor
//! names (`model.layers.0.self_attn.q_proj.weight`), so loading and saving are
//! name-driven with no mapping table.

use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

use crate::cache::KvStore;
use crate::config::{Activation, ModelConfig, NormStyle};
use crate::rope::apply_rotary;

/// How new variables are initialised: random (tests, benches, training from
/// scratch) or with constants that a checkpoint load overwrites.
#[derive(Clone, Copy, Debug)]
pub(crate) enum WeightInit {
    Random { std: f64 },
    Placeholder,
}

impl WeightInit {
    pub(crate) fn matrix(self) -> Init {
        match self {
            WeightInit::Random { std } => Init::Randn {
                mean: 0.0,
                stdev: std,
            },
            WeightInit::Placeholder => Init::Const(0.0),
        }
    }
}

pub(crate) struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub(crate) fn new(p: Path, in_dim: i64, out_dim: i64, bias: bool, init: WeightInit) -> Linear {
        let weight = p.var("weight", &[out_dim, in_dim], init.matrix());
        let bias = bias.then(|| p.var("bias", &[out_dim], Init::Const(0.0)));
        Linear { weight, bias }
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Tensor {
        xs.linear(&self.weight, self.bias.as_ref())
    }

    pub(crate) fn into_weight(self) -> Tensor {
        self.weight
    }
}

pub(crate) struct RmsNorm {
    weight: Tensor,
    eps: f64,
    style: NormStyle,
}

impl RmsNorm {
    pub(crate) fn new(p: Path, dim: i64, eps: f64, style: NormStyle) -> RmsNorm {
        // Scale-style weights start at 1, (1 + w)-style at 0: both are identity.
        let init = match style {
            NormStyle::Scale => Init::Const(1.0),
            NormStyle::OnePlusScale => Init::Const(0.0),
        };
        RmsNorm {
            weight: p.var("weight", &[dim], init),
            eps,
            style,
        }
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Tensor {
        let kind = xs.kind();
        let xf = xs.to_kind(Kind::Float);
        let variance = xf.square().mean_dim(-1, true, Kind::Float);
        let normed = xf * (variance + self.eps).rsqrt();
        match self.style {
            // Llama: `weight * hidden_states.to(input_dtype)`.
            NormStyle::Scale => &self.weight * normed.to_kind(kind),
            // Gemma2: `(normed * (1.0 + weight.float())).type_as(x)`.
            NormStyle::OnePlusScale => {
                (normed * (self.weight.to_kind(Kind::Float) + 1.0)).to_kind(kind)
            }
        }
    }
}

/// The attention mask of one forward call, for layers with one window setting.
pub(crate) enum AttnMask {
    /// No padding and no cached prefix: plain causal attention.
    Causal,
    /// Explicit `[batch, 1, q_len, kv_len]` boolean mask (true = attend).
    Explicit(Tensor),
    /// One query per row (a step of the continuous sampler), with its
    /// `[slots, 1, 1, kv_len]` mask: attention is computed per kv head for
    /// its group of query heads, reading the slots' keys and values where
    /// they are (no copy per query head).
    Slots(Tensor),
}

impl AttnMask {
    /// Builds the mask for queries at absolute indices `kv_len - q_len ..
    /// kv_len` over keys `0 .. kv_len`. `key_mask` is `[batch, kv_len]` with 1
    /// for tokens and 0 for padding, or `None` when nothing is padded.
    ///
    /// Padded queries (which attend to no token) attend to themselves, so no
    /// row is empty and no NaN reaches the values other positions read.
    pub(crate) fn build(
        key_mask: Option<&Tensor>,
        q_len: i64,
        kv_len: i64,
        window: Option<i64>,
        device: tch::Device,
    ) -> AttnMask {
        let window_binds = window.is_some_and(|w| w < kv_len);
        if key_mask.is_none() && q_len == kv_len && !window_binds {
            return AttnMask::Causal;
        }
        let opts = (Kind::Int64, device);
        let q_idx = Tensor::arange_start(kv_len - q_len, kv_len, opts).unsqueeze(1);
        let k_idx = Tensor::arange(kv_len, opts).unsqueeze(0);
        let mut allowed = k_idx.le_tensor(&q_idx);
        if let Some(w) = window {
            // transformers: `kv_idx > q_idx - sliding_window`.
            allowed = allowed.logical_and(&k_idx.gt_tensor(&(&q_idx - w)));
        }
        let mut allowed = allowed.view([1, 1, q_len, kv_len]);
        if let Some(key_mask) = key_mask {
            let keys = key_mask.ne(0).view([-1, 1, 1, kv_len]);
            allowed = allowed.logical_and(&keys);
        }
        let diagonal = k_idx.eq_tensor(&q_idx).view([1, 1, q_len, kv_len]);
        AttnMask::Explicit(allowed.logical_or(&diagonal))
    }

    /// The mask of one decoding step of the continuous sampler: slot `b`'s
    /// query sits at `positions[b]` (`[slots, 1]`, on the device) and sees
    /// keys `0 ..= positions[b]` of the first `kv_len` (within the window).
    /// Built on the device from the positions: nothing is read back.
    pub(crate) fn for_slots(positions: &Tensor, kv_len: i64, window: Option<i64>) -> AttnMask {
        let k_idx = Tensor::arange(kv_len, (Kind::Int64, positions.device())).unsqueeze(0);
        let mut allowed = k_idx.le_tensor(positions);
        if let Some(w) = window {
            allowed = allowed.logical_and(&k_idx.gt_tensor(&(positions - w)));
        }
        AttnMask::Slots(allowed.view([-1, 1, 1, kv_len]))
    }

    fn explicit(&self, q_len: i64, kv_len: i64, device: tch::Device) -> Tensor {
        match self {
            AttnMask::Explicit(mask) | AttnMask::Slots(mask) => mask.shallow_clone(),
            AttnMask::Causal => Tensor::ones([q_len, kv_len], (Kind::Bool, device))
                .tril(kv_len - q_len)
                .view([1, 1, q_len, kv_len]),
        }
    }
}

pub(crate) struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    num_heads: i64,
    num_kv_heads: i64,
    head_dim: i64,
    scale: f64,
    softcap: Option<f64>,
}

impl Attention {
    pub(crate) fn new(p: Path, c: &ModelConfig, init: WeightInit) -> Attention {
        let q_dim = c.num_heads * c.head_dim;
        let kv_dim = c.num_kv_heads * c.head_dim;
        Attention {
            q_proj: Linear::new(&p / "q_proj", c.hidden_size, q_dim, c.qkv_bias, init),
            k_proj: Linear::new(&p / "k_proj", c.hidden_size, kv_dim, c.qkv_bias, init),
            v_proj: Linear::new(&p / "v_proj", c.hidden_size, kv_dim, c.qkv_bias, init),
            o_proj: Linear::new(&p / "o_proj", q_dim, c.hidden_size, c.o_bias, init),
            num_heads: c.num_heads,
            num_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            scale: c.attn_scale,
            softcap: c.attn_logit_softcap,
        }
    }

    pub(crate) fn forward(
        &self,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &AttnMask,
        cache: Option<(&mut dyn KvStore, usize)>,
    ) -> Tensor {
        let (b, t, _) = xs.size3().expect("hidden states are [batch, seq, hidden]");
        let heads = |proj: &Linear, n: i64| {
            proj.forward(xs)
                .view([b, t, n, self.head_dim])
                .transpose(1, 2)
        };
        let q = apply_rotary(&heads(&self.q_proj, self.num_heads), cos, sin);
        let k = apply_rotary(&heads(&self.k_proj, self.num_kv_heads), cos, sin);
        let v = heads(&self.v_proj, self.num_kv_heads);
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, &k, &v),
            None => (k, v),
        };
        let groups = self.num_heads / self.num_kv_heads;
        let out = match (self.softcap, mask) {
            (softcap, AttnMask::Slots(m)) => self.grouped_decode(&q, &k, &v, m, softcap),
            // Without a mask the flash kernels take grouped kv heads as they
            // are (as transformers does): no copies of k and v.
            (None, AttnMask::Causal) => Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                None::<Tensor>,
                0.0,
                true,
                self.scale,
                groups > 1,
            ),
            // The masked (memory-efficient) kernels need one kv head per
            // query head.
            (None, AttnMask::Explicit(m)) => Tensor::scaled_dot_product_attention(
                &q,
                &repeat_kv(&k, groups),
                &repeat_kv(&v, groups),
                Some(m),
                0.0,
                false,
                self.scale,
                false,
            ),
            // SDPA cannot soft-cap scores: the eager path of transformers.
            (Some(cap), mask) => {
                let (k, v) = (repeat_kv(&k, groups), repeat_kv(&v, groups));
                let kv_len = k.size()[2];
                let scores = q.matmul(&k.transpose(2, 3)) * self.scale;
                let scores = (scores / cap).tanh() * cap;
                let allowed = mask.explicit(t, kv_len, xs.device());
                let scores = scores.masked_fill(&allowed.logical_not(), f64::NEG_INFINITY);
                let probs = scores.softmax(-1, Kind::Float).to_kind(q.kind());
                probs.matmul(&v)
            }
        };
        let out = out
            .transpose(1, 2)
            .contiguous()
            .view([b, t, self.num_heads * self.head_dim]);
        self.o_proj.forward(&out)
    }
}

impl Attention {
    /// One query per row: `q` `[rows, heads, 1, d]` viewed as `[rows,
    /// kv_heads, groups, d]`, so each kv head's keys and values (views into
    /// the slots) serve its group of query heads in one matmul.
    fn grouped_decode(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        softcap: Option<f64>,
    ) -> Tensor {
        let (b, h, _, d) = q.size4().expect("q is [batch, heads, 1, head_dim]");
        let q = q.view([b, self.num_kv_heads, h / self.num_kv_heads, d]);
        let mut scores = q.matmul(&k.transpose(2, 3)) * self.scale;
        if let Some(cap) = softcap {
            scores = (scores / cap).tanh() * cap;
        }
        let scores = scores.masked_fill(&mask.logical_not(), f64::NEG_INFINITY);
        let probs = scores.softmax(-1, Kind::Float).to_kind(q.kind());
        probs.matmul(v).view([b, h, 1, d])
    }
}

/// `[b, kv_heads, s, d]` -> `[b, kv_heads * groups, s, d]`, each kv head
/// repeated for its group of query heads (transformers' `repeat_kv`).
fn repeat_kv(xs: &Tensor, groups: i64) -> Tensor {
    if groups == 1 {
        return xs.shallow_clone();
    }
    let (b, h, s, d) = xs.size4().expect("kv is [batch, heads, seq, head_dim]");
    xs.unsqueeze(2)
        .expand([b, h, groups, s, d], false)
        .reshape([b, h * groups, s, d])
}

pub(crate) struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    activation: Activation,
}

impl Mlp {
    pub(crate) fn new(p: Path, c: &ModelConfig, init: WeightInit) -> Mlp {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        Mlp {
            gate_proj: Linear::new(&p / "gate_proj", h, i, c.mlp_bias, init),
            up_proj: Linear::new(&p / "up_proj", h, i, c.mlp_bias, init),
            down_proj: Linear::new(&p / "down_proj", i, h, c.mlp_bias, init),
            activation: c.activation,
        }
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Tensor {
        let gate = self.gate_proj.forward(xs);
        let gate = match self.activation {
            Activation::Silu => gate.silu(),
            Activation::GeluTanh => gate.gelu("tanh"),
            Activation::Gelu => gate.gelu("none"),
        };
        self.down_proj.forward(&(gate * self.up_proj.forward(xs)))
    }
}

pub(crate) struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    /// Gemma2 only: norm of the attention output before the residual add.
    post_attention_norm: Option<RmsNorm>,
    /// The norm before the MLP. Llama calls it `post_attention_layernorm`,
    /// Gemma2 `pre_feedforward_layernorm`.
    pre_mlp_norm: RmsNorm,
    mlp: Mlp,
    /// Gemma2 only: norm of the MLP output before the residual add.
    post_mlp_norm: Option<RmsNorm>,
    pub(crate) window: Option<i64>,
}

impl DecoderLayer {
    pub(crate) fn new(p: Path, c: &ModelConfig, layer: usize, init: WeightInit) -> DecoderLayer {
        let norm =
            |name: &str| RmsNorm::new(&p / name, c.hidden_size, c.rms_norm_eps, c.norm_style);
        let (post_attention_norm, pre_mlp_norm, post_mlp_norm) = if c.sandwich_norms {
            (
                Some(norm("post_attention_layernorm")),
                norm("pre_feedforward_layernorm"),
                Some(norm("post_feedforward_layernorm")),
            )
        } else {
            (None, norm("post_attention_layernorm"), None)
        };
        DecoderLayer {
            input_layernorm: norm("input_layernorm"),
            self_attn: Attention::new(&p / "self_attn", c, init),
            post_attention_norm,
            pre_mlp_norm,
            mlp: Mlp::new(&p / "mlp", c, init),
            post_mlp_norm,
            window: c.layer_windows[layer],
        }
    }

    pub(crate) fn forward(
        &self,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &AttnMask,
        cache: Option<(&mut dyn KvStore, usize)>,
    ) -> Tensor {
        let attn = self
            .self_attn
            .forward(&self.input_layernorm.forward(xs), cos, sin, mask, cache);
        let attn = match &self.post_attention_norm {
            Some(norm) => norm.forward(&attn),
            None => attn,
        };
        let xs = xs + attn;
        let mlp = self.mlp.forward(&self.pre_mlp_norm.forward(&xs));
        let mlp = match &self.post_mlp_norm {
            Some(norm) => norm.forward(&mlp),
            None => mlp,
        };
        xs + mlp
    }
}
