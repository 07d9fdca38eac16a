//! `tokenizer.json` through the Hugging Face `tokenizers` crate.

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

pub const TOKENIZER_FILE: &str = "tokenizer.json";

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl Tokenizer {
    /// Reads `<dir>/tokenizer.json`.
    pub fn from_dir(dir: &Path) -> Result<Tokenizer> {
        Self::from_file(&dir.join(TOKENIZER_FILE))
    }

    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        if !path.is_file() {
            return Err(ModelError::Tokenizer {
                path: path.to_path_buf(),
                message: "no tokenizer file here (premem reads the Hugging Face tokenizer.json)"
                    .into(),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer {
            path: path.to_path_buf(),
            message: format!("cannot read tokenizer: {e}"),
        })?;
        Ok(Tokenizer {
            inner,
            path: path.to_path_buf(),
        })
    }

    pub fn from_tokenizer(inner: tokenizers::Tokenizer, path: PathBuf) -> Tokenizer {
        Tokenizer { inner, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| self.error(format!("cannot encode text: {e}")))?;
        Ok(encoding.get_ids().iter().map(|&id| id as i64).collect())
    }

    pub fn decode(&self, ids: &[i64], skip_special_tokens: bool) -> Result<String> {
        let ids: Vec<u32> = ids
            .iter()
            .map(|&id| {
                u32::try_from(id).map_err(|_| self.error(format!("token id {id} is negative")))
            })
            .collect::<Result<_>>()?;
        self.inner
            .decode(&ids, skip_special_tokens)
            .map_err(|e| self.error(format!("cannot decode tokens: {e}")))
    }

    /// Vocabulary size including added (special) tokens.
    pub fn vocab_size(&self) -> i64 {
        self.inner.get_vocab_size(true) as i64
    }

    pub fn token_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(i64::from)
    }

    /// Fails unless every token id fits a model with `vocab_size` embeddings.
    pub fn check_fits(&self, vocab_size: i64) -> Result<()> {
        let max_id = self
            .inner
            .get_vocab(true)
            .into_values()
            .max()
            .map_or(-1, i64::from);
        if max_id >= vocab_size {
            return Err(self.error(format!(
                "token id {max_id} does not fit the model's vocab_size {vocab_size}"
            )));
        }
        Ok(())
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self
            .inner
            .to_string(false)
            .map_err(|e| self.error(format!("cannot serialise tokenizer: {e}")))?;
        crate::weights::write_atomic(path, json.as_bytes())
    }

    fn error(&self, message: String) -> ModelError {
        ModelError::Tokenizer {
            path: self.path.clone(),
            message,
        }
    }
}
