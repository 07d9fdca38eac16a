//! The key/value slots of the continuous sampler: a fixed number of rows,
//! each with room for a prompt and its longest sample. A row that finishes
//! frees its slot, and the next (prompt, sample) is loaded into it; each
//! slot keeps its own position on the device, so a decoding step needs no
//! host bookkeeping tensor (positions, masks) sent to the device.

use tch::{Device, Kind, Tensor};

use crate::cache::{KvCache, KvStore};
use crate::config::ModelConfig;

pub struct SlotCache {
    /// Per layer: `[slots, kv_heads, capacity, head_dim]`.
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    /// `[slots]` int64 on the device: how many positions each slot holds,
    /// which is where it writes its next key.
    positions: Tensor,
    capacity: i64,
    /// This step's write index (`positions` spread over `[slots, kv_heads,
    /// 1, head_dim]`) and how many keys its queries see.
    step: Option<(Tensor, i64)>,
}

impl SlotCache {
    /// `slots` empty slots of `capacity` positions for a model of config
    /// `c` whose weights are of `options` (kind, device).
    pub fn new(c: &ModelConfig, options: (Kind, Device), slots: i64, capacity: i64) -> SlotCache {
        let buffer = || Tensor::zeros([slots, c.num_kv_heads, capacity, c.head_dim], options);
        let layers = c.num_layers as usize;
        SlotCache {
            keys: (0..layers).map(|_| buffer()).collect(),
            values: (0..layers).map(|_| buffer()).collect(),
            positions: Tensor::zeros([slots], (Kind::Int64, options.1)),
            capacity,
            step: None,
        }
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> i64 {
        self.keys
            .iter()
            .chain(&self.values)
            .map(|t| t.numel() as i64 * t.kind().elt_size_in_bytes() as i64)
            .sum()
    }

    /// `[slots, 1]`: the position each slot's next query takes.
    pub(crate) fn query_positions(&self) -> Tensor {
        self.positions.unsqueeze(1)
    }

    /// Puts a prefilled prompt (the first `len` positions of a one-row
    /// [`KvCache`]) into `slot`: its keys and values are copied there, and
    /// the slot continues after it.
    pub fn load_prompt(&mut self, slot: i64, prompt: &KvCache, len: i64) {
        assert!(
            len <= prompt.len(),
            "{len} positions of a {}-position cache",
            prompt.len()
        );
        assert!(
            len < self.capacity,
            "a prompt of {len} positions in slots of {}",
            self.capacity
        );
        for (layer, (keys, values)) in self.keys.iter().zip(&self.values).enumerate() {
            let (k, v) = prompt.layer_kv(layer).expect("a prefilled prompt");
            keys.get(slot)
                .narrow(1, 0, len)
                .copy_(&k.get(0).narrow(1, 0, len));
            values
                .get(slot)
                .narrow(1, 0, len)
                .copy_(&v.get(0).narrow(1, 0, len));
        }
        let _ = self.positions.get(slot).fill_(len);
    }

    /// Keeps the slots `index` (int64, on the device), in that order.
    pub fn keep_slots(&mut self, index: &Tensor) {
        for t in self.keys.iter_mut().chain(self.values.iter_mut()) {
            *t = t.index_select(0, index);
        }
        self.positions = self.positions.index_select(0, index);
    }

    /// Before a step's layers: its queries see the first `attended` keys.
    pub(crate) fn begin_step(&mut self, attended: i64) {
        let (slots, heads, _, dim) = self.keys[0].size4().expect("4-d slots");
        let index = self
            .positions
            .view([slots, 1, 1, 1])
            .expand([slots, heads, 1, dim], false);
        self.step = Some((index, attended.min(self.capacity)));
    }

    /// After a step's layers: every slot moved one position on. A free slot
    /// (its output ignored) stays inside the buffer.
    pub(crate) fn end_step(&mut self) {
        self.step = None;
        let _ = self
            .positions
            .g_add_scalar_(1)
            .clamp_max_(self.capacity - 1);
    }
}

impl KvStore for SlotCache {
    /// At each slot's own position (one new key per slot).
    fn append(&mut self, layer: usize, keys: &Tensor, values: &Tensor) -> (Tensor, Tensor) {
        let (index, attended) = self.step.as_ref().expect("inside a step");
        let k = self.keys[layer].scatter_(2, index, keys);
        let v = self.values[layer].scatter_(2, index, values);
        (k.narrow(2, 0, *attended), v.narrow(2, 0, *attended))
    }
}
