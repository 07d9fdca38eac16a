//! The tokenizer of the synthetic task.

use crate::data::dataset::Example;

pub const PAD_TOKEN: &str = "<|pad|>";
pub const EOS_TOKEN: &str = "<|eos|>";

/// The tokenizer of the synthetic task: trained on every example as the
/// model sees it (prompt + completion rendered with `template`).
pub fn train_task_tokenizer<'a>(
    examples: impl IntoIterator<Item = &'a Example>,
    template: &crate::PromptTemplate,
    vocab_size: usize,
) -> Result<tokenizers::Tokenizer, String> {
    let texts: Vec<String> = examples
        .into_iter()
        .map(|e| {
            format!(
                "{}{}",
                template.render_prompt(e),
                template.render_completion(e)
            )
        })
        .collect();
    train_tokenizer(&texts, vocab_size)
}

/// A byte-level BPE tokenizer trained on `texts`, with digits split one by
/// one (arithmetic stays learnable for a tiny model) and `<|pad|>`,
/// `<|eos|>` as special tokens 0 and 1.
pub fn train_tokenizer(
    texts: &[String],
    vocab_size: usize,
) -> Result<tokenizers::Tokenizer, String> {
    use tokenizers::models::TrainerWrapper;
    use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::digits::Digits;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    use tokenizers::{AddedToken, PreTokenizerWrapper};

    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![
            AddedToken::from(PAD_TOKEN, true),
            AddedToken::from(EOS_TOKEN, true),
        ])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let mut tokenizer = tokenizers::Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(Sequence::new(vec![
        PreTokenizerWrapper::Digits(Digits::new(true)),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
    ]))));
    tokenizer.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
    tokenizer
        .train(&mut trainer, texts.iter())
        .map_err(|e| format!("tokenizer training failed: {e}"))?;
    Ok(tokenizer)
}
