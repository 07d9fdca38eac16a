//! The causal language model: embeddings, decoder layers, final norm, LM head.

use std::collections::BTreeMap;
use std::path::Path;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::cache::{KvCache, KvStore};
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::layers::{AttnMask, DecoderLayer, RmsNorm, WeightInit};
use crate::rope::Rotary;
use crate::slots::SlotCache;
use crate::weights::{self, Checkpoint};

pub struct CausalLm {
    config: ModelConfig,
    vs: VarStore,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    /// `lm_head.weight`, or the embedding matrix when embeddings are tied.
    lm_head: Tensor,
    rotary: Rotary,
}

/// Options for [`CausalLm::save`].
#[derive(Clone, Debug)]
pub struct SaveOptions {
    /// Shard the weights into files of at most this many bytes.
    pub max_shard_bytes: u64,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions {
            max_shard_bytes: weights::DEFAULT_MAX_SHARD_BYTES,
        }
    }
}

/// bf16 on CUDA, fp32 on the CPU: the kind premem runs a device in by default.
pub fn default_kind(device: Device) -> Kind {
    if device.is_cuda() {
        Kind::BFloat16
    } else {
        Kind::Float
    }
}

impl CausalLm {
    fn build(config: ModelConfig, device: Device, kind: Kind, init: WeightInit) -> CausalLm {
        let mut vs = VarStore::new(device);
        vs.set_kind(kind);
        let root = vs.root();
        let model = &root / "model";
        let c = &config;
        let embed_tokens =
            (&model / "embed_tokens").var("weight", &[c.vocab_size, c.hidden_size], init.matrix());
        let layers = (0..c.num_layers as usize)
            .map(|i| DecoderLayer::new(&model / "layers" / i, c, i, init))
            .collect();
        let norm = RmsNorm::new(&model / "norm", c.hidden_size, c.rms_norm_eps, c.norm_style);
        let lm_head = if c.tie_word_embeddings {
            embed_tokens.shallow_clone()
        } else {
            crate::layers::Linear::new(&root / "lm_head", c.hidden_size, c.vocab_size, false, init)
                .into_weight()
        };
        let rotary = Rotary::new(c, device);
        CausalLm {
            config,
            vs,
            embed_tokens,
            layers,
            norm,
            lm_head,
            rotary,
        }
    }

    /// A randomly initialised model (weights ~ N(0, `initializer_range`), norms
    /// at identity), seeded: the same seed gives the same weights.
    pub fn random(config: ModelConfig, device: Device, kind: Kind, seed: i64) -> CausalLm {
        let std = config
            .raw
            .get("initializer_range")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.02);
        // libtorch draws from one global generator: ranks that are threads
        // of one process (as in the trainer tests) would interleave their
        // draws and get weights that depend on timing.
        static SEEDED_INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _only_us = SEEDED_INIT.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(seed);
        Self::build(config, device, kind, WeightInit::Random { std })
    }

    /// Loads `config.json` and the safetensors weights of a Hugging Face model
    /// directory.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<CausalLm> {
        let config = ModelConfig::from_dir(dir)?;
        Self::load_with_config(config, dir, device, kind)
    }

    /// Loads weights from `dir` into a model of the given config.
    pub fn load_with_config(
        config: ModelConfig,
        dir: &Path,
        device: Device,
        kind: Kind,
    ) -> Result<CausalLm> {
        let checkpoint = Checkpoint::open(dir)?;
        let model = Self::build(config, device, kind, WeightInit::Placeholder);
        let tied = model.config.tie_word_embeddings;
        checkpoint.load_into(&model.vs.variables(), |name| {
            // Non-persistent rotary buffers of old checkpoints, and a stored
            // copy of the tied LM head, carry nothing premem needs.
            name.ends_with("rotary_emb.inv_freq") || (tied && name == "lm_head.weight")
        })?;
        Ok(model)
    }

    /// Saves `config.json` and the weights in the Hugging Face layout, so
    /// transformers (and [`CausalLm::load`]) read them back.
    pub fn save(&self, dir: &Path, options: &SaveOptions) -> Result<()> {
        let tensors: BTreeMap<String, Tensor> = self.vs.variables().into_iter().collect();
        weights::save_safetensors(dir, &tensors, options.max_shard_bytes)?;
        let config = self.config.to_json(weights::dtype_name(self.kind()));
        weights::write_atomic(
            &dir.join("config.json"),
            (serde_json::to_string_pretty(&config).expect("json") + "\n").as_bytes(),
        )
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    pub fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.vs
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub fn kind(&self) -> Kind {
        self.embed_tokens.kind()
    }

    /// A cache sized for `capacity` positions, for [`CausalLm::forward`].
    pub fn new_cache(&self, capacity: i64) -> KvCache {
        KvCache::with_capacity(self.layers.len(), capacity)
    }

    /// Logits `[batch, seq, vocab]` for `input_ids` `[batch, seq]`.
    ///
    /// `attention_mask` `[batch, seq]` marks tokens (1) and padding (0); left
    /// and right padding both work, positions count tokens only. With a cache,
    /// the call continues the cached sequences (the mask covers the new
    /// positions only) and appends to the cache.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let hidden = self.forward_hidden(input_ids, attention_mask, cache)?;
        Ok(self.logits(&hidden))
    }

    /// The LM head (with Gemma2's final soft-capping) over hidden states.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        let logits = hidden.linear(&self.lm_head, None::<Tensor>);
        match self.config.final_logit_softcap {
            Some(cap) => (logits / cap).tanh() * cap,
            None => logits,
        }
    }

    /// Final hidden states `[batch, seq, hidden]` (after the last norm).
    pub fn forward_hidden(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (mut xs, shared, keys) =
            self.prepare(input_ids, attention_mask, cache.as_deref_mut())?;
        for (i, layer) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| (c as &mut dyn KvStore, i));
            xs = shared.forward(layer, &xs, layer_cache);
        }
        if let Some(cache) = cache {
            cache.commit(keys.mask, keys.has_padding);
        }
        Ok(self.norm.forward(&xs))
    }

    /// One decoding step of the continuous sampler: `tokens` `[slots]` (on
    /// the device, as the last step chose them) go in at each slot's own
    /// position; the queries see the first `attended` keys. Returns the
    /// logits `[slots, vocab]`. Nothing is read back from the device and
    /// nothing sent to it (`tests/sync_free.rs` holds it to that).
    pub fn forward_slots(
        &self,
        tokens: &Tensor,
        slots: &mut SlotCache,
        attended: i64,
    ) -> Result<Tensor> {
        let positions = slots.query_positions();
        let mut xs = self.embed(&tokens.view([-1, 1]))?;
        let (cos, sin) = self.rotary.cos_sin(&positions, self.kind());
        let mut masks: Vec<(Option<i64>, AttnMask)> = vec![];
        for layer in &self.layers {
            if !masks.iter().any(|(w, _)| *w == layer.window) {
                let mask = AttnMask::for_slots(&positions, attended, layer.window);
                masks.push((layer.window, mask));
            }
        }
        let shared = LayerInputs {
            cos: cos.unsqueeze(1),
            sin: sin.unsqueeze(1),
            masks,
        };
        slots.begin_step(attended);
        for (i, layer) in self.layers.iter().enumerate() {
            xs = shared.forward(layer, &xs, Some((slots as &mut dyn KvStore, i)));
        }
        slots.end_step();
        Ok(self.logits(&self.norm.forward(&xs)).select(1, 0))
    }

    /// The embedded tokens, what every layer of this call shares (rotary
    /// cos/sin, one mask per window setting) and the key side.
    fn prepare(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> Result<(Tensor, LayerInputs, Keys)> {
        let (batch, q_len) = check_shapes(input_ids, attention_mask)?;
        let keys = self.key_positions(attention_mask, batch, q_len, cache)?;
        let kv_len = keys.mask.size()[1];
        let key_mask = keys.has_padding.then_some(&keys.mask);
        let xs = self.embed(input_ids)?;
        let (cos, sin) = self.rotary.cos_sin(&keys.positions, self.kind());
        let mut masks: Vec<(Option<i64>, AttnMask)> = vec![];
        for layer in &self.layers {
            if !masks.iter().any(|(w, _)| *w == layer.window) {
                let mask = AttnMask::build(key_mask, q_len, kv_len, layer.window, self.device());
                masks.push((layer.window, mask));
            }
        }
        let shared = LayerInputs {
            cos: cos.unsqueeze(1),
            sin: sin.unsqueeze(1),
            masks,
        };
        Ok((xs, shared, keys))
    }

    /// A forward that keeps only each decoder layer's input, for
    /// [`Recompute::backward`] to recompute the layers from (activation
    /// checkpointing). No cache.
    pub fn forward_checkpointed(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Recompute<'_>> {
        let (embedded, shared, _) = self.prepare(input_ids, attention_mask, None)?;
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut xs = embedded.detach();
        tch::no_grad(|| {
            for layer in &self.layers {
                let next = shared.forward(layer, &xs, None);
                inputs.push(std::mem::replace(&mut xs, next));
            }
        });
        let last = xs.set_requires_grad(true);
        let hidden = self.norm.forward(&last);
        Ok(Recompute {
            model: self,
            embedded,
            inputs,
            shared,
            last,
            hidden,
        })
    }

    /// The key mask over cached and new tokens, whether it has padding, and
    /// the new tokens' positions (counting tokens: left padding shifts them,
    /// as in generate()).
    fn key_positions(
        &self,
        attention_mask: Option<&Tensor>,
        batch: i64,
        q_len: i64,
        cache: Option<&mut KvCache>,
    ) -> Result<Keys> {
        let device = self.device();
        let new_mask = match attention_mask {
            Some(mask) => mask.to_device(device).to_kind(Kind::Int64),
            None => Tensor::ones([batch, q_len], (Kind::Int64, device)),
        };
        let all_tokens = attention_mask.is_none();
        let (mask, has_padding) = match cache {
            Some(cache) => {
                if let Some(cached) = cache.key_mask()
                    && cached.size()[0] != batch
                {
                    return Err(ModelError::Invalid(format!(
                        "cache holds {} rows, input_ids has {batch}",
                        cached.size()[0]
                    )));
                }
                cache.extend_mask(&new_mask, all_tokens)
            }
            None => {
                let padded = !all_tokens && new_mask.eq(0).any().int64_value(&[]) != 0;
                (new_mask.shallow_clone(), padded)
            }
        };
        let kv_len = mask.size()[1];
        let positions =
            (mask.cumsum(1, Kind::Int64) - 1)
                .clamp_min(0)
                .narrow(1, kv_len - q_len, q_len);
        Ok(Keys {
            mask,
            has_padding,
            positions,
        })
    }

    /// Token embeddings (scaled, for the families that scale them).
    fn embed(&self, input_ids: &Tensor) -> Result<Tensor> {
        let device = self.device();
        let ids = input_ids.to_device(device);
        let mut xs =
            Tensor::f_embedding(&self.embed_tokens, &ids, -1, false, false).map_err(|e| {
                ModelError::Invalid(format!(
                    "token ids must be in 0..{} (vocab_size): {e}",
                    self.config.vocab_size
                ))
            })?;
        if let Some(scale) = self.config.embedding_scale {
            // transformers multiplies by the scale cast to the weight dtype.
            // The cast is done on the host (a scalar, not a tensor sent to
            // the device at every step): the product is computed the same.
            let scale = Tensor::from(scale as f32)
                .to_kind(self.kind())
                .double_value(&[]);
            xs *= scale;
        }
        Ok(xs)
    }
}

/// What the decoder layers of one forward call share.
struct LayerInputs {
    cos: Tensor,
    sin: Tensor,
    /// One mask per distinct window setting.
    masks: Vec<(Option<i64>, AttnMask)>,
}

impl LayerInputs {
    fn forward(
        &self,
        layer: &DecoderLayer,
        xs: &Tensor,
        cache: Option<(&mut dyn KvStore, usize)>,
    ) -> Tensor {
        let mask = &self
            .masks
            .iter()
            .find(|(w, _)| *w == layer.window)
            .expect("a mask per window setting")
            .1;
        layer.forward(xs, &self.cos, &self.sin, mask, cache)
    }
}

/// A checkpointed forward ([`CausalLm::forward_checkpointed`]): the final
/// hidden states, which carry gradients into the last layer's output, and
/// each layer's input.
pub struct Recompute<'m> {
    model: &'m CausalLm,
    /// The embedding output, with its graph (backward into the embeddings).
    embedded: Tensor,
    /// Layer `i`'s input, without graph.
    inputs: Vec<Tensor>,
    shared: LayerInputs,
    /// The last layer's output, a leaf: backward through `hidden` fills its
    /// gradient.
    last: Tensor,
    /// The final hidden states `[batch, seq, hidden]` (after the last norm).
    pub hidden: Tensor,
}

impl Recompute<'_> {
    /// After backward has run from `hidden`: back-propagates through the
    /// layers, last to first, each recomputed from its saved input, then into
    /// the embeddings. The surrogate `(output * grad_output).sum()` gives the
    /// layer's parameters their gradient and its input the gradient for the
    /// layer below. Does nothing when no gradient reached `hidden`.
    pub fn backward(self) {
        let mut grad = self.last.grad();
        if !grad.defined() {
            return;
        }
        for (layer, input) in self.model.layers.iter().zip(&self.inputs).rev() {
            let input = input.detach().set_requires_grad(true);
            let output = self.shared.forward(layer, &input, None);
            (output * &grad).sum(Kind::Float).backward();
            grad = input.grad();
        }
        (&self.embedded * grad).sum(Kind::Float).backward();
    }
}

/// The key side of one forward: see [`CausalLm::key_positions`].
struct Keys {
    mask: Tensor,
    has_padding: bool,
    positions: Tensor,
}

/// `(batch, seq)` of `input_ids`, which must be 2-d, with a mask of the
/// same shape when one is given.
fn check_shapes(input_ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<(i64, i64)> {
    let (batch, q_len) = input_ids.size2().map_err(|_| {
        ModelError::Invalid(format!(
            "input_ids must be [batch, seq], got {:?}",
            input_ids.size()
        ))
    })?;
    if let Some(mask) = attention_mask
        && mask.size() != [batch, q_len]
    {
        return Err(ModelError::Invalid(format!(
            "attention_mask is {:?}, input_ids {:?}",
            mask.size(),
            input_ids.size()
        )));
    }
    Ok((batch, q_len))
}

impl std::fmt::Debug for CausalLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CausalLm")
            .field("family", &self.config.family)
            .field("layers", &self.layers.len())
            .field("device", &self.device())
            .field("kind", &self.kind())
            .finish()
    }
}
