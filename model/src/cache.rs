//! Key/value cache for incremental decoding of (left-)padded batches.
//!
//! Per layer, keys and values live in buffers `[batch, kv_heads, capacity,
//! head_dim]` that grow by doubling, so a decoding step writes one slice
//! instead of copying the whole history. The cache also keeps the padding mask
//! of everything cached, from which positions and attention masks follow.

use tch::Tensor;

struct LayerKv {
    keys: Tensor,
    values: Tensor,
}

pub struct KvCache {
    layers: Vec<Option<LayerKv>>,
    /// `[batch, len]`: 1 for tokens, 0 for padding.
    key_mask: Option<Tensor>,
    /// Whether any cached position is padding (`key_mask` has a zero).
    has_padding: bool,
    len: i64,
    /// Capacity to allocate on the first append (the caller's length hint).
    reserve: i64,
}

impl KvCache {
    pub fn new(num_layers: usize) -> KvCache {
        Self::with_capacity(num_layers, 0)
    }

    /// A cache that allocates room for `capacity` positions up front (prompt
    /// plus the tokens to generate), so it never grows while decoding.
    pub fn with_capacity(num_layers: usize, capacity: i64) -> KvCache {
        KvCache {
            layers: (0..num_layers).map(|_| None).collect(),
            key_mask: None,
            has_padding: false,
            len: 0,
            reserve: capacity,
        }
    }

    /// Number of cached positions (padding included).
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The padding mask of the cached positions, `[batch, len]`.
    pub fn key_mask(&self) -> Option<&Tensor> {
        self.key_mask.as_ref()
    }

    /// Appends the mask of `q_len` new positions and returns the mask over all
    /// positions (cached + new) and whether any of them is padding.
    /// `all_tokens` says the new mask is known to have no padding (no mask
    /// was given), which spares reading it back from the device.
    pub(crate) fn extend_mask(&mut self, new_mask: &Tensor, all_tokens: bool) -> (Tensor, bool) {
        let new_padding = !all_tokens && new_mask.eq(0).any().int64_value(&[]) != 0;
        let full = match &self.key_mask {
            Some(old) => Tensor::cat(&[old, new_mask], 1),
            None => new_mask.shallow_clone(),
        };
        (full, self.has_padding || new_padding)
    }

    /// Records that a forward call over `full_mask` finished.
    pub(crate) fn commit(&mut self, full_mask: Tensor, has_padding: bool) {
        self.len = full_mask.size()[1];
        self.key_mask = Some(full_mask);
        self.has_padding = has_padding;
    }

    /// Layer `layer`'s keys and values `[batch, kv_heads, capacity,
    /// head_dim]` (the first [`KvCache::len`] positions hold the cache).
    pub(crate) fn layer_kv(&self, layer: usize) -> Option<(&Tensor, &Tensor)> {
        self.layers[layer].as_ref().map(|kv| (&kv.keys, &kv.values))
    }

    /// Row `i` of the result is row `index[i]` of this cache: repeats a
    /// prefilled prompt for several samples, or drops finished rows.
    pub fn select_rows(&mut self, index: &Tensor) {
        for kv in self.layers.iter_mut().flatten() {
            kv.keys = kv.keys.index_select(0, index);
            kv.values = kv.values.index_select(0, index);
        }
        if let Some(mask) = &self.key_mask {
            let mask = mask.index_select(0, &index.to_device(mask.device()));
            self.key_mask = Some(mask);
        }
    }
}

/// Where a decoder layer's attention writes its new keys and values and
/// reads all of them back: the growing [`KvCache`] of a (padded) batch, or
/// the fixed slots of the continuous sampler ([`crate::slots::SlotCache`]).
pub(crate) trait KvStore {
    /// Writes the new keys/values `[batch, kv_heads, q_len, head_dim]` of
    /// `layer` and returns views over every key/value a query may attend.
    fn append(&mut self, layer: usize, keys: &Tensor, values: &Tensor) -> (Tensor, Tensor);
}

impl KvStore for KvCache {
    /// After the cached positions.
    fn append(&mut self, layer: usize, keys: &Tensor, values: &Tensor) -> (Tensor, Tensor) {
        let offset = self.len;
        let (b, h, q_len, d) = keys
            .size4()
            .expect("keys are [batch, heads, seq, head_dim]");
        let needed = offset + q_len;
        let slot = &mut self.layers[layer];
        let capacity = slot.as_ref().map_or(0, |kv| kv.keys.size()[2]);
        if needed > capacity {
            let new_capacity = needed.max(self.reserve).max(2 * capacity);
            let alloc = || Tensor::zeros([b, h, new_capacity, d], (keys.kind(), keys.device()));
            let grown = LayerKv {
                keys: alloc(),
                values: alloc(),
            };
            if let Some(old) = slot.take() {
                grown
                    .keys
                    .narrow(2, 0, offset)
                    .copy_(&old.keys.narrow(2, 0, offset));
                grown
                    .values
                    .narrow(2, 0, offset)
                    .copy_(&old.values.narrow(2, 0, offset));
            }
            *slot = Some(grown);
        }
        let kv = slot.as_mut().expect("allocated above");
        kv.keys.narrow(2, offset, q_len).copy_(keys);
        kv.values.narrow(2, offset, q_len).copy_(values);
        (kv.keys.narrow(2, 0, needed), kv.values.narrow(2, 0, needed))
    }
}
