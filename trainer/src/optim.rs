//! Adam and AdamW over flat fp32 buffers.
//!
//! All trainable parameters live in one flat fp32 "master" buffer, in name
//! order; the moments and the gradients are flat buffers of the same layout.
//! That makes the update a handful of large kernels, gives the distributed
//! runtime one bucket to all-reduce, and makes the optimizer state three
//! tensors to save and restore bit-exactly.
//!
//! With fp32 weights the model's variables *are* views into the master buffer
//! (no copy). With bf16 weights the master holds the fp32 values and each step
//! writes them back rounded to bf16.
//!
//! The update is PyTorch's `torch.optim.Adam`/`AdamW` (single-tensor form).

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

pub struct Optimizer {
    config: AdamConfig,
    slots: Vec<Slot>,
    /// fp32 parameters; the variables are views into it when `shared`.
    master: Tensor,
    shared: bool,
    grads: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
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
        let master = flat(0.0);
        let mut optimizer = Optimizer {
            config,
            slots,
            master,
            shared,
            grads: flat(0.0),
            exp_avg: flat(0.0),
            exp_avg_sq: flat(0.0),
            steps: 0,
        };
        optimizer.master_from_variables();
        optimizer
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

    /// The flat fp32 gradient, filled by [`Optimizer::gather_grads`]; the
    /// distributed runtime all-reduces it in place.
    pub fn grads_mut(&mut self) -> &mut Tensor {
        &mut self.grads
    }

    /// Copies every variable's gradient into the flat buffer (zeros for
    /// parameters that got none) and clears them for the next step.
    pub fn gather_grads(&mut self) {
        tch::no_grad(|| {
            for slot in &mut self.slots {
                let mut view = self.grads.narrow(0, slot.offset, slot.numel);
                let grad = slot.var.grad();
                if grad.defined() {
                    view.copy_(&grad.reshape([-1]));
                } else {
                    let _ = view.zero_();
                }
                slot.var.zero_grad();
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
        let AdamConfig {
            kind,
            betas: [beta1, beta2],
            eps,
            weight_decay,
        } = self.config;
        self.steps += 1;
        tch::no_grad(|| {
            let grad = match kind {
                OptimizerKind::Adamw => {
                    if weight_decay != 0.0 {
                        let _ = self.master.g_mul_scalar_(1.0 - lr * weight_decay);
                    }
                    self.grads.shallow_clone()
                }
                OptimizerKind::Adam if weight_decay != 0.0 => {
                    &self.grads + &self.master * weight_decay
                }
                OptimizerKind::Adam => self.grads.shallow_clone(),
            };
            let _ = self.exp_avg.lerp_(&grad, 1.0 - beta1);
            let _ = self.exp_avg_sq.g_mul_scalar_(beta2);
            let _ = self.exp_avg_sq.g_add_(&(grad.square() * (1.0 - beta2)));
            let bias_correction1 = 1.0 - beta1.powf(self.steps as f64);
            let bias_correction2 = 1.0 - beta2.powf(self.steps as f64);
            let step_size = lr / bias_correction1;
            let denom = self.exp_avg_sq.sqrt() / bias_correction2.sqrt() + eps;
            let _ = self.master.g_sub_(&(&self.exp_avg / denom * step_size));
        });
        if !self.shared {
            self.variables_from_master();
        }
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
        let config = AdamConfig {
            kind: OptimizerKind::Adamw,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let mut opt = Optimizer::new(vars, config);
        (&x * &x).sum(Kind::Float).backward();
        opt.gather_grads();
        assert_eq!(
            Vec::<f32>::try_from(&opt.grads).unwrap(),
            vec![2.0, 4.0, 6.0]
        );
        assert!(!x.grad().defined() || x.grad().abs().sum(Kind::Float).double_value(&[]) == 0.0);
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
}
