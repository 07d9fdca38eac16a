//! The loss covers the completion (answer tokens + EOS) and nothing else.

use premem_core::testing;
use premem_core::{Example, PromptTemplate};
use premem_model::batch::{Batch, LengthLimit, TokenizedExample, summed_nll, tokenize};
use premem_model::{CausalLm, ModelConfig, Tokenizer};
use tch::{Device, Kind};

fn tiny_model() -> CausalLm {
    let extra = serde_json::json!({"initializer_range": 0.5});
    let config = ModelConfig::from_json(&testing::tiny_config("llama", 64, extra)).unwrap();
    CausalLm::random(config, Device::Cpu, Kind::Float, 11)
}

fn examples() -> (TokenizedExample, TokenizedExample) {
    (
        TokenizedExample {
            tokens: vec![5, 9, 12, 7, 30, 41, 1],
            prompt_len: 4,
        },
        TokenizedExample {
            tokens: vec![3, 8, 22, 1],
            prompt_len: 2,
        },
    )
}

fn loss(model: &CausalLm, batch: &Batch) -> f64 {
    tch::no_grad(|| summed_nll(model, batch).unwrap().double_value(&[]))
}

#[test]
fn prompt_labels_do_not_count_and_answer_labels_do() {
    let model = tiny_model();
    let (a, b) = examples();
    let batch = Batch::collate(&[&a, &b], 0, Device::Cpu);
    let base = loss(&model, &batch);
    assert!(base > 0.0);
    assert_eq!(batch.loss_tokens, 3 + 2);
    assert_eq!(
        batch.loss_mask.sum(Kind::Float).double_value(&[]) as usize,
        batch.loss_tokens
    );

    // Every label outside the loss mask (prompt positions, padding) changed.
    let outside = batch.loss_mask.eq(0.0);
    let mut changed = Batch::collate(&[&a, &b], 0, Device::Cpu);
    changed.labels = batch.labels.where_self(
        &outside.logical_not(),
        &((&batch.labels + 17).remainder(64)),
    );
    assert!(!changed.labels.equal(&batch.labels));
    assert_eq!(
        loss(&model, &changed),
        base,
        "prompt labels changed the loss"
    );

    // One answer label changed.
    let mut answer = Batch::collate(&[&a, &b], 0, Device::Cpu);
    let flat = answer.labels.view([-1]);
    let position = Vec::<f32>::try_from(batch.loss_mask.view([-1]))
        .unwrap()
        .iter()
        .position(|m| *m == 1.0)
        .unwrap();
    let _ = flat.get(position as i64).fill_(63);
    answer.labels = flat.view(batch.labels.size().as_slice());
    assert_ne!(
        loss(&model, &answer),
        base,
        "an answer label did not change the loss"
    );
}

#[test]
fn the_completion_ends_with_eos_and_is_what_the_loss_covers() {
    let tokenizer = Tokenizer::from_dir(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/fixtures/llama"),
    )
    .unwrap();
    let example = Example {
        id: "e".into(),
        query: "How many clips?".into(),
        target: "48+24=72\n#### 72".into(),
        answer: "72".into(),
        parent_id: None,
        meta: Default::default(),
    };
    let template = PromptTemplate::default();
    let (t, cut) = tokenize(&example, &template, &tokenizer, 2, LengthLimit::train(1024)).unwrap();
    assert!(!cut);
    assert_eq!(*t.tokens.last().unwrap(), 2);
    let prompt = tokenizer.encode("How many clips?\nAnswer:", true).unwrap();
    let completion = tokenizer
        .encode(" 48+24=72\n#### 72\nDone.", false)
        .unwrap();
    assert_eq!(t.prompt_len, prompt.len());
    assert_eq!(t.loss_tokens(), completion.len() + 1);

    let (short, cut) = tokenize(
        &example,
        &template,
        &tokenizer,
        2,
        LengthLimit::train(prompt.len() + 3),
    )
    .unwrap();
    assert!(cut && short.tokens.len() == prompt.len() + 3);
    let err = tokenize(
        &example,
        &template,
        &tokenizer,
        2,
        LengthLimit::train(prompt.len()),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("example 'e': the prompt alone has"), "{err}");
    assert!(err.contains("train.max_length is"), "{err}");
    let limit = LengthLimit::context(prompt.len());
    let err = tokenize(&example, &template, &tokenizer, 2, limit)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("max_position_embeddings") && !err.contains("train."),
        "{err}"
    );

    // Gradients flow from the answer tokens into the model.
    let model = tiny_model();
    let batch = Batch::collate(&[&examples().0], 0, Device::Cpu);
    summed_nll(&model, &batch).unwrap().backward();
    let grad = model.var_store().variables()["model.layers.0.mlp.up_proj.weight"].grad();
    assert!(grad.abs().sum(Kind::Float).double_value(&[]) > 0.0);
}
