//! Adam and AdamW over flat fp32 buffers.
//!
//! All trainable parameters live in one flat fp32 "master" buffer, in name
//! order; the moments and the gradients are flat buffers of the same layout.
//! That gives the distributed runtime one bucket to all-reduce and makes the
//! optimizer state three tensors to save and restore bit-exactly.
//!
//! With fp32 weights the model's variables *are* views into the master buffer
//! and their `.grad`s views into the flat gradient (PyTorch DDP's
//! `gradient_as_bucket_view`): backward accumulates straight into the bucket,
//! with no copy and no second gradient in memory, so the optimizer keeps 16
//! bytes per parameter as PyTorch's AdamW does (weight, gradient, two
//! moments). With bf16 weights the master holds the fp32 values, the `.grad`s
//! are views into a flat bf16 buffer cast into the fp32 one once per step, and
//! each step writes the weights back rounded to bf16.
//!
//! The update is PyTorch's `torch.optim.Adam`/`AdamW` (single-tensor form),
//! run over the flat buffers in cache-sized chunks with one reused scratch
//! chunk: no full-size temporaries, the same arithmetic in the same order.

use std::collections::BTreeMap;

use premem_core::spec::OptimizerKind;
use tch::{Kind, Tensor};

#[derive(Clone, Copy, Debug)]
pub struct AdamConfig {
    pub kind: OptimizerKind,
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
}

struct Slot {
    name: String,
    var: Tensor,
    offset: i64,
    numel: i64,
    shape: Vec<i64>,
}

/// Elements per chunk of the update (4 MiB of fp32: the chunk and its
/// scratch stay in cache across the update's passes).
const CHUNK: i64 = 1 << 20;

pub struct Optimizer {
    config: AdamConfig,
    slots: Vec<Slot>,
    /// fp32 parameters; the variables are views into it when `shared`.
    master: Tensor,
    shared: bool,
    /// The flat fp32 gradient; the variables' `.grad`s are views into it
    /// when `shared`.
    grads: Tensor,
    /// Not `shared`: the flat gradient in the variables' kind, which their
    /// `.grad`s are views into.
    var_grads: Option<Tensor>,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// Working memory of the update: two chunks.
    scratch: Tensor,
    /// Optimizer steps taken.
    steps: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum OptimizerError {
    #[error("optimizer state does not match the model: {0}")]
    Mismatch(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// The scalars of one update.
struct Update {
    kind: OptimizerKind,
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    bias_correction2: f64,
    step_size: f64,
}

impl Update {
    fn new(config: &AdamConfig, lr: f64, steps: i64) -> Update {
        let [beta1, beta2] = config.betas;
        Update {
            kind: config.kind,
            lr,
            beta1,
            beta2,
            eps: config.eps,
            weight_decay: config.weight_decay,
            bias_correction2: 1.0 - beta2.powf(steps as f64),
            step_size: lr / (1.0 - beta1.powf(steps as f64)),
        }
    }
}

impl Optimizer {
    /// Takes over the trainable `variables` (name -> tensor).
    pub fn new(variables: BTreeMap<String, Tensor>, config: AdamConfig) -> Optimizer {
        let mut slots = Vec::with_capacity(variables.len());
        let mut offset = 0;
        for (name, var) in variables {
            let numel = var.numel() as i64;
            let shape = var.size();
            slots.push(Slot {
                name,
                var,
                offset,
                numel,
                shape,
            });
            offset += numel;
        }
        let device = slots.first().map_or(tch::Device::Cpu, |s| s.var.device());
        let shared = slots.iter().all(|s| s.var.kind() == Kind::Float);
        let flat = |init: f64| Tensor::full([offset], init, (Kind::Float, device));
        let var_kind = slots.first().map_or(Kind::Float, |s| s.var.kind());
        let var_grads = (!shared).then(|| Tensor::zeros([offset], (var_kind, device)));
        let mut optimizer = Optimizer {
            config,
            slots,
            master: flat(0.0),
            shared,
            grads: flat(0.0),
            var_grads,
            exp_avg: flat(0.0),
            exp_avg_sq: flat(0.0),
            scratch: Tensor::zeros([2, CHUNK.min(offset.max(1))], (Kind::Float, device)),
            steps: 0,
        };
        optimizer.master_from_variables();
        optimizer.bind_grads();
        optimizer
    }

    /// The flat buffer the variables' `.grad`s are views into.
    fn grad_bucket(&self) -> &Tensor {
        self.var_grads.as_ref().unwrap_or(&self.grads)
    }

    /// Makes each variable's `.grad` a view into the gradient bucket, so
    /// backward accumulates into it in place (autograd adds into a `.grad`
    /// that exists; it only allocates one when there is none).
    fn bind_grads(&mut self) {
        let bucket = self.grad_bucket().shallow_clone();
        for slot in &mut self.slots {
            if !slot.var.grad().defined() && slot.var.requires_grad() {
                // Autograd creates the `.grad`; its memory is replaced below.
                (slot.var.sum(Kind::Float) * 0.0).backward();
            }
            let mut grad = slot.var.grad();
            if grad.defined() {
                let view = bucket.narrow(0, slot.offset, slot.numel);
                grad.set_data(&view.view(slot.shape.as_slice()));
            }
        }
    }

    /// Whether every trainable variable's `.grad` is still its view of the
    /// bucket.
    fn grads_bound(&self) -> bool {
        let bucket = self.grad_bucket();
        let elem = bucket.kind().elt_size_in_bytes();
        let base = bucket.data_ptr() as usize;
        self.slots.iter().all(|slot| {
            let grad = slot.var.grad();
            let at = base + slot.offset as usize * elem;
            // A frozen variable gets no gradient: its part of the bucket stays 0.
            !slot.var.requires_grad() || (grad.defined() && grad.data_ptr() as usize == at)
        })
    }

    /// Copies the variables into the master buffer and, when shared, makes
    /// them views of it.
    fn master_from_variables(&mut self) {
        tch::no_grad(|| {
            for slot in &mut self.slots {
                let mut view = self.master.narrow(0, slot.offset, slot.numel);
                view.copy_(&slot.var.reshape([-1]));
                if self.shared {
                    slot.var.set_data(&view.view(slot.shape.as_slice()));
                }
            }
        });
    }

    /// Writes the fp32 master into non-fp32 variables (rounding to their kind).
    fn variables_from_master(&mut self) {
        tch::no_grad(|| {
            for slot in &mut self.slots {
                let fp32 = self
                    .master
                    .narrow(0, slot.offset, slot.numel)
                    .view(slot.shape.as_slice());
                slot.var.copy_(&fp32);
            }
        });
    }

    /// Number of parameters.
    pub fn numel(&self) -> i64 {
        self.master.numel() as i64
    }

    pub fn steps(&self) -> i64 {
        self.steps
    }

    /// The flat fp32 gradient, complete after [`Optimizer::gather_grads`];
    /// the distributed runtime all-reduces it in place.
    pub fn grads_mut(&mut self) -> &mut Tensor {
        &mut self.grads
    }

    /// Clears the gradients before a step's backward passes.
    pub fn zero_grads(&mut self) {
        tch::no_grad(|| {
            let _ = self.grads.zero_();
            if let Some(var_grads) = &mut self.var_grads {
                let _ = var_grads.zero_();
            }
        });
    }

    /// Completes the flat fp32 gradient after the backward passes. With fp32
    /// variables there is nothing to do (their `.grad`s are views into it);
    /// other kinds are cast from their bucket. A `.grad` something else
    /// replaced is copied in and bound to the bucket again.
    pub fn gather_grads(&mut self) {
        if !self.grads_bound() {
            self.copy_unbound_grads();
            self.bind_grads();
        }
        if let Some(var_grads) = &self.var_grads {
            tch::no_grad(|| self.grads.copy_(var_grads));
        }
    }

    /// Copies into the bucket the gradients that are not views of it (zeros
    /// for variables without one).
    fn copy_unbound_grads(&mut self) {
        let bucket = self.grad_bucket().shallow_clone();
        tch::no_grad(|| {
            for slot in &self.slots {
                let mut view = bucket.narrow(0, slot.offset, slot.numel);
                let grad = slot.var.grad();
                if !grad.defined() {
                    let _ = view.zero_();
                } else if grad.data_ptr() != view.data_ptr() {
                    view.copy_(&grad.reshape([-1]));
                }
            }
        });
    }

    /// The global gradient norm; scales gradients down to `max_norm` when it
    /// is exceeded (`torch.nn.utils.clip_grad_norm_`).
    pub fn clip_grad_norm(&mut self, max_norm: Option<f64>) -> f64 {
        let norm = self.grads.norm().double_value(&[]);
        if let Some(max_norm) = max_norm {
            let coef = max_norm / (norm + 1e-6);
            if coef < 1.0 {
                let _ = self.grads.g_mul_scalar_(coef);
            }
        }
        norm
    }

    /// One Adam/AdamW update with learning rate `lr` from the gathered grads.
    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        let update = Update::new(&self.config, lr, self.steps);
        let n = self.numel();
        tch::no_grad(|| {
            let mut start = 0;
            while start < n {
                let len = CHUNK.min(n - start);
                self.update_chunk(&update, start, len);
                start += len;
            }
        });
        if !self.shared {
            self.variables_from_master();
        }
    }

    /// The update of elements `start .. start + len`: PyTorch's single-tensor
    /// Adam/AdamW, each operation into the chunk or the scratch in place.
    fn update_chunk(&mut self, u: &Update, start: i64, len: i64) {
        let at = |t: &Tensor| t.narrow(0, start, len);
        let (mut param, grads) = (at(&self.master), at(&self.grads));
        let (mut exp_avg, mut exp_avg_sq) = (at(&self.exp_avg), at(&self.exp_avg_sq));
        let mut tmp = self.scratch.get(0).narrow(0, 0, len);
        let grad = match (u.kind, u.weight_decay != 0.0) {
            (OptimizerKind::Adamw, true) => {
                let _ = param.g_mul_scalar_(1.0 - u.lr * u.weight_decay);
                grads
            }
            // grad + param * weight_decay, into the second scratch chunk.
            (OptimizerKind::Adam, true) => {
                let mut coupled = self.scratch.get(1).narrow(0, 0, len);
                coupled.copy_(&param);
                let _ = coupled.g_mul_scalar_(u.weight_decay);
                grads.add_out(&coupled, &coupled)
            }
            (_, false) => grads,
        };
        let _ = exp_avg.lerp_(&grad, 1.0 - u.beta1);
        let _ = exp_avg_sq.g_mul_scalar_(u.beta2);
        let _ = grad.square_out(&tmp);
        let _ = tmp.g_mul_scalar_(1.0 - u.beta2);
        let _ = exp_avg_sq.g_add_(&tmp);
        // denom = sqrt(exp_avg_sq) / sqrt(bias_correction2) + eps
        let _ = exp_avg_sq.sqrt_out(&tmp);
        let _ = tmp.g_div_scalar_(u.bias_correction2.sqrt());
        let _ = tmp.g_add_scalar_(u.eps);
        // param -= exp_avg / denom * step_size
        let _ = exp_avg.div_out(&tmp, &tmp);
        let _ = tmp.g_mul_scalar_(u.step_size);
        let _ = param.g_sub_(&tmp);
    }

    /// The state to save: the moments and, for non-fp32 weights, the fp32
    /// master (fp32 weights are saved with the model).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut state = vec![
            ("exp_avg".to_string(), self.exp_avg.shallow_clone()),
            ("exp_avg_sq".to_string(), self.exp_avg_sq.shallow_clone()),
        ];
        if !self.shared {
            state.push(("master".to_string(), self.master.shallow_clone()));
        }
        state
    }

    /// Parameter names and shapes in buffer order, saved beside the state so
    /// a resume checks it restores into the same layout.
    pub fn layout(&self) -> Vec<(String, Vec<i64>)> {
        self.slots
            .iter()
            .map(|s| (s.name.clone(), s.shape.clone()))
            .collect()
    }

    /// Restores state saved by [`Optimizer::state_tensors`] after `steps`
    /// steps. The variables must already hold the checkpoint's weights.
    pub fn restore(
        &mut self,
        layout: &[(String, Vec<i64>)],
        state: &BTreeMap<String, Tensor>,
        steps: i64,
    ) -> Result<(), OptimizerError> {
        if layout != self.layout().as_slice() {
            return Err(OptimizerError::Mismatch(
                "parameter names or shapes differ from the saved layout".into(),
            ));
        }
        let get = |name: &str| {
            state
                .get(name)
                .ok_or_else(|| OptimizerError::Mismatch(format!("'{name}' is missing")))
                .and_then(|t| {
                    if t.size() == [self.master.numel() as i64] {
                        Ok(t)
                    } else {
                        Err(OptimizerError::Mismatch(format!(
                            "'{name}' has shape {:?}",
                            t.size()
                        )))
                    }
                })
        };
        tch::no_grad(|| -> Result<(), OptimizerError> {
            self.exp_avg.f_copy_(get("exp_avg")?)?;
            self.exp_avg_sq.f_copy_(get("exp_avg_sq")?)?;
            Ok(())
        })?;
        if self.shared {
            self.master_from_variables();
        } else {
            let master = get("master")?;
            tch::no_grad(|| self.master.f_copy_(master))?;
            self.variables_from_master();
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variables(values: &[&[f32]]) -> BTreeMap<String, Tensor> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    format!("p{i}"),
                    Tensor::from_slice(v).set_requires_grad(true),
                )
            })
            .collect()
    }

    /// AdamW with PyTorch's default betas and eps, no weight decay.
    fn plain_adamw() -> AdamConfig {
        AdamConfig {
            kind: OptimizerKind::Adamw,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }

    /// Reference: PyTorch's single-tensor AdamW, step by step on scalars.
    fn reference_adamw(p: f64, grads: &[f64], lr: f64, wd: f64, decoupled: bool) -> f64 {
        let (b1, b2, eps) = (0.9, 0.999, 1e-8);
        let (mut p, mut m, mut v) = (p, 0.0, 0.0);
        for (t, &g0) in grads.iter().enumerate() {
            let t = (t + 1) as i32;
            let g = if decoupled {
                p *= 1.0 - lr * wd;
                g0
            } else {
                g0 + wd * p
            };
            m = b1 * m + (1.0 - b1) * g;
            v = b2 * v + (1.0 - b2) * g * g;
            let denom = (v / (1.0 - b2.powi(t))).sqrt() + eps;
            p -= lr / (1.0 - b1.powi(t)) * m / denom;
        }
        p
    }

    fn run(kind: OptimizerKind, wd: f64) -> (f64, f64) {
        let vars = variables(&[&[1.0, -2.0], &[0.5]]);
        let x = vars["p0"].shallow_clone();
        let mut opt = Optimizer::new(
            vars,
            AdamConfig {
                kind,
                betas: [0.9, 0.999],
                eps: 1e-8,
                weight_decay: wd,
            },
        );
        // loss = sum(p0^2): grad 2 * p0, recomputed from the updated weights.
        for _ in 0..3 {
            opt.zero_grads();
            (&x * &x).sum(Kind::Float).backward();
            opt.gather_grads();
            opt.step(0.1);
        }
        (x.double_value(&[0]), x.double_value(&[1]))
    }

    #[test]
    fn adamw_and_adam_follow_pytorch_updates() {
        for (kind, decoupled) in [(OptimizerKind::Adamw, true), (OptimizerKind::Adam, false)] {
            let got = run(kind, 0.1);
            // Replay with the gradients the trajectory produces.
            let mut p = 1.0f64;
            let mut grads = vec![];
            for _ in 0..3 {
                grads.push(2.0 * p);
                p = reference_adamw(1.0, &grads, 0.1, 0.1, decoupled);
            }
            assert!((got.0 - p).abs() < 1e-6, "{kind:?}: {} vs {p}", got.0);
        }
    }

    #[test]
    fn fp32_variables_are_views_of_the_master_and_state_round_trips() {
        let vars = variables(&[&[1.0, 2.0, 3.0]]);
        let x = vars["p0"].shallow_clone();
        let config = plain_adamw();
        let mut opt = Optimizer::new(vars, config);
        assert_eq!(opt.grads.abs().sum(Kind::Float).double_value(&[]), 0.0);
        // Two micro-batches accumulate into the bucket: 2x + 1x.
        (&x * &x).sum(Kind::Float).backward();
        x.sum(Kind::Float).backward();
        opt.gather_grads();
        assert_eq!(
            Vec::<f32>::try_from(&opt.grads).unwrap(),
            vec![3.0, 5.0, 7.0]
        );
        assert_eq!(x.grad().data_ptr(), opt.grads.data_ptr(), "grad is a view");
        opt.zero_grads();
        (&x * &x).sum(Kind::Float).backward();
        opt.gather_grads();
        assert_eq!(
            Vec::<f32>::try_from(&x.grad()).unwrap(),
            vec![2.0, 4.0, 6.0]
        );
        let norm = opt.clip_grad_norm(Some(1.0));
        assert!((norm - 56f64.sqrt()).abs() < 1e-5);
        assert!((opt.grads.norm().double_value(&[]) - 1.0).abs() < 1e-5);
        opt.step(0.01);
        assert!(
            x.double_value(&[0]) < 1.0,
            "the variable moved with the master"
        );

        let saved: BTreeMap<String, Tensor> = opt
            .state_tensors()
            .into_iter()
            .map(|(k, v)| (k, v.copy()))
            .collect();
        let layout = opt.layout();
        let fresh_vars =
            BTreeMap::from([("p0".to_string(), x.detach().copy().set_requires_grad(true))]);
        let mut again = Optimizer::new(fresh_vars, config);
        again.restore(&layout, &saved, opt.steps()).unwrap();
        assert!(again.exp_avg_sq.equal(&opt.exp_avg_sq) && again.master.equal(&opt.master));
        let bad = vec![("q".to_string(), vec![3])];
        assert!(again.restore(&bad, &saved, 1).is_err());
    }

    /// PyTorch's `_single_tensor_adam` on whole tensors, as premem computed
    /// it before the update was chunked.
    fn reference_step(p: &mut Tensor, g: &Tensor, m: &mut Tensor, v: &mut Tensor, u: &Update) {
        let grad = match (u.kind, u.weight_decay != 0.0) {
            (OptimizerKind::Adamw, true) => {
                let _ = p.g_mul_scalar_(1.0 - u.lr * u.weight_decay);
                g.shallow_clone()
            }
            (OptimizerKind::Adam, true) => g + &*p * u.weight_decay,
            (_, false) => g.shallow_clone(),
        };
        let _ = m.lerp_(&grad, 1.0 - u.beta1);
        let _ = v.g_mul_scalar_(u.beta2);
        let _ = v.g_add_(&(grad.square() * (1.0 - u.beta2)));
        let denom = v.sqrt() / u.bias_correction2.sqrt() + u.eps;
        let _ = p.g_sub_(&(&*m / denom * u.step_size));
    }

    #[test]
    fn the_chunked_update_is_bit_identical_to_the_whole_buffer_update() {
        let n = 2 * CHUNK + 12_345;
        tch::manual_seed(3);
        let init = Tensor::randn([n], (Kind::Float, tch::Device::Cpu));
        for (kind, wd) in [
            (OptimizerKind::Adamw, 0.1),
            (OptimizerKind::Adamw, 0.0),
            (OptimizerKind::Adam, 0.1),
        ] {
            let config = AdamConfig {
                kind,
                betas: [0.9, 0.999],
                eps: 1e-8,
                weight_decay: wd,
            };
            let vars = BTreeMap::from([("w".to_string(), init.copy().set_requires_grad(true))]);
            let mut opt = Optimizer::new(vars, config);
            let (mut p, mut m, mut v) = (init.copy(), init.zeros_like(), init.zeros_like());
            for step in 1..=3 {
                let g = Tensor::randn([n], (Kind::Float, tch::Device::Cpu));
                opt.grads.copy_(&g);
                opt.step(1e-3);
                let u = Update::new(&config, 1e-3, step);
                tch::no_grad(|| reference_step(&mut p, &g, &mut m, &mut v, &u));
            }
            assert!(opt.master.equal(&p), "{kind:?} wd {wd}: weights differ");
            assert!(
                opt.exp_avg.equal(&m) && opt.exp_avg_sq.equal(&v),
                "{kind:?}: moments"
            );
        }
    }

    #[test]
    fn bf16_gradients_are_cast_into_the_fp32_bucket_and_weights_rounded_back() {
        let w = Tensor::from_slice(&[1.0f32, -2.0, 3.0])
            .to_kind(Kind::BFloat16)
            .set_requires_grad(true);
        let config = plain_adamw();
        let mut opt = Optimizer::new(
            BTreeMap::from([("w".to_string(), w.shallow_clone())]),
            config,
        );
        opt.zero_grads();
        (&w * &w).sum(Kind::Float).backward();
        let bucket = opt.var_grads.as_ref().expect("a bf16 bucket");
        assert_eq!(
            w.grad().data_ptr(),
            bucket.data_ptr(),
            "bf16 grad is a view"
        );
        opt.gather_grads();
        assert_eq!(
            Vec::<f32>::try_from(&opt.grads).unwrap(),
            vec![2.0, -4.0, 6.0]
        );
        opt.step(0.5);
        // Adam's first step moves each weight by lr against its gradient's sign.
        let expected = Tensor::from_slice(&[0.5f32, -1.5, 2.5]);
        assert!(opt.master.allclose(&expected, 1e-6, 1e-6, false));
        assert!(
            w.to_kind(Kind::Float).equal(&expected),
            "bf16 weights follow the master"
        );
    }

    #[test]
    fn a_gradient_replaced_behind_the_optimizer_is_copied_and_bound_again() {
        let vars = variables(&[&[1.0, 2.0], &[3.0]]);
        let (x, y) = (vars["p0"].shallow_clone(), vars["p1"].shallow_clone());
        let config = plain_adamw();
        let mut opt = Optimizer::new(vars, config);
        // Another owner of the grad gives it memory of its own.
        let mut grad = x.grad();
        grad.set_data(&Tensor::from_slice(&[7.0f32, 8.0]));
        (&y * 2.0).sum(Kind::Float).backward();
        assert!(!opt.grads_bound());
        opt.gather_grads();
        assert_eq!(
            Vec::<f32>::try_from(&opt.grads).unwrap(),
            vec![7.0, 8.0, 2.0]
        );
        assert!(opt.grads_bound());
        assert_eq!(x.grad().data_ptr(), opt.grads.data_ptr());
    }
}
