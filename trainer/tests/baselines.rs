//! The checkpoint probe: gradient variance over minibatches and distance from
//! init, against an explicit computation (per-minibatch gradients taken one
//! at a time with autograd, variance as the mean squared deviation).

use premem_core::spec::OptimizerKind;
use premem_core::testing;
use premem_model::batch::{Batch, TokenizedExample, summed_nll};
use premem_model::{CausalLm, ModelConfig};
use premem_trainer::baselines::Probe;
use premem_trainer::optim::{AdamConfig, Optimizer, Partition};
use tch::{Device, Kind, Tensor};

fn tiny_model(seed: i64) -> CausalLm {
    let extra = serde_json::json!({"initializer_range": 0.5});
    let config = ModelConfig::from_json(&testing::tiny_config("llama", 64, extra)).unwrap();
    CausalLm::random(config, Device::Cpu, Kind::Float, seed)
}

fn examples() -> Vec<TokenizedExample> {
    (0..12)
        .map(|i| TokenizedExample {
            tokens: (0..6 + i % 4)
                .map(|t| 2 + (7 * i + 3 * t) as i64 % 60)
                .chain([1])
                .collect(),
            prompt_len: 3,
        })
        .collect()
}

fn optimizer(model: &CausalLm) -> Optimizer {
    Optimizer::new(
        model.var_store().variables().into_iter().collect(),
        AdamConfig {
            kind: OptimizerKind::Adamw,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
        },
        Partition::WHOLE,
    )
}

/// The gradient of a minibatch's mean token loss, all variables flattened
/// in name order.
fn gradient(model: &CausalLm, examples: &[TokenizedExample], minibatch: &[usize]) -> Tensor {
    let refs: Vec<&TokenizedExample> = minibatch.iter().map(|&i| &examples[i]).collect();
    let batch = Batch::collate(&refs, 0, Device::Cpu);
    let loss = summed_nll(model, &batch).unwrap() / batch.loss_tokens as f64;
    let mut variables: Vec<(String, Tensor)> = model.var_store().variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    let inputs: Vec<Tensor> = variables.iter().map(|(_, t)| t.shallow_clone()).collect();
    let grads = Tensor::run_backward(&[loss], &inputs, false, false);
    Tensor::cat(
        &grads
            .iter()
            .map(|g| g.reshape([-1]).to_kind(Kind::Double))
            .collect::<Vec<_>>(),
        0,
    )
}

#[test]
fn gradient_variance_and_distance_match_an_explicit_computation() {
    let examples = examples();
    let minibatches = vec![
        vec![0, 1, 2, 3],
        vec![4, 5, 6, 7],
        vec![8, 9, 10, 11],
        vec![2, 5, 8, 11],
    ];
    let init = tiny_model(3);
    // Micro-batches of 3: the probe accumulates over uneven micro-batches.
    let probe = Probe::new(Some(&init), minibatches.clone(), 3);
    let model = tiny_model(4);
    let mut opt = optimizer(&model);
    let measured = probe.measure(40, &model, &mut opt, &examples, 0).unwrap();

    let grads: Vec<Tensor> = minibatches
        .iter()
        .map(|m| gradient(&model, &examples, m))
        .collect();
    let stacked = Tensor::stack(&grads, 0);
    let mean = stacked.mean_dim(Some([0i64].as_slice()), false, Kind::Double);
    let deviations = (&stacked - mean.unsqueeze(0))
        .square()
        .sum(Kind::Double)
        .double_value(&[]);
    let expected = deviations / (minibatches.len() - 1) as f64;
    assert!(expected > 0.0);
    assert!(
        ((measured.grad_variance.unwrap() - expected) / expected).abs() < 1e-4,
        "{:?} vs {expected}",
        measured.grad_variance
    );
    let norms: f64 = grads
        .iter()
        .map(|g| g.norm().double_value(&[]))
        .sum::<f64>()
        / 4.0;
    assert!(((measured.grad_norm_mean.unwrap() - norms) / norms).abs() < 1e-4);
    assert_eq!(
        (
            measured.step,
            measured.grad_minibatches,
            measured.grad_minibatch_size
        ),
        (40, 4, 4)
    );

    let mut distance = 0.0;
    let (a, b) = (init.var_store().variables(), model.var_store().variables());
    for (name, t) in &a {
        distance += (b[name].to_kind(Kind::Double) - t.to_kind(Kind::Double))
            .square()
            .sum(Kind::Double)
            .double_value(&[]);
    }
    assert!(((measured.distance_from_init.unwrap() - distance) / distance).abs() < 1e-9);
    // The model itself is its own init: distance 0.
    let own = Probe::new(Some(&model), minibatches.clone(), 3)
        .measure(40, &model, &mut opt, &examples, 0)
        .unwrap();
    assert_eq!(own.distance_from_init, Some(0.0));
    // Unknown initial weights: no distance rather than a wrong one.
    let unknown = Probe::new(None, minibatches, 3)
        .measure(40, &model, &mut opt, &examples, 0)
        .unwrap();
    assert_eq!(unknown.distance_from_init, None);
    assert!(unknown.grad_variance.is_some());
}
