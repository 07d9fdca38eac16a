//! The prompt template: how an example becomes model input (the prompt) and
//! training target (the completion). The default is the paper authors' recipe:
//! prompt `{query}\nAnswer:`, completion ` {target}\nDone.`, stop at `\nDone.`.

use serde::{Deserialize, Serialize};

use crate::data::dataset::Example;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptTemplate {
    /// Model input; `{query}` is replaced by the example's query.
    #[serde(default = "default_prompt")]
    pub prompt: String,
    /// Training target after the prompt; `{target}` is the solution trace.
    /// The loss covers these tokens and the EOS token only.
    #[serde(default = "default_completion")]
    pub completion: String,
    /// Sampling stops at these strings (and at EOS).
    #[serde(default = "default_stop")]
    pub stop: Vec<String>,
}

fn default_prompt() -> String {
    "{query}\nAnswer:".into()
}

fn default_completion() -> String {
    " {target}\nDone.".into()
}

fn default_stop() -> Vec<String> {
    vec!["\nDone.".into()]
}

impl Default for PromptTemplate {
    fn default() -> Self {
        PromptTemplate {
            prompt: default_prompt(),
            completion: default_completion(),
            stop: default_stop(),
        }
    }
}

impl PromptTemplate {
    /// Checks that each template has its one placeholder and no other.
    pub fn validate(&self) -> Result<(), String> {
        check_placeholders("prompt.prompt", &self.prompt, "{query}")?;
        check_placeholders("prompt.completion", &self.completion, "{target}")?;
        if self.stop.iter().any(String::is_empty) {
            return Err("prompt.stop: stop strings must not be empty".into());
        }
        Ok(())
    }

    pub fn render_prompt(&self, example: &Example) -> String {
        self.prompt.replace("{query}", &example.query)
    }

    pub fn render_completion(&self, example: &Example) -> String {
        self.completion.replace("{target}", &example.target)
    }

    /// A sample cut at the first stop string.
    pub fn cut_at_stop<'a>(&self, sample: &'a str) -> &'a str {
        let end = self
            .stop
            .iter()
            .filter_map(|s| sample.find(s.as_str()))
            .min()
            .unwrap_or(sample.len());
        &sample[..end]
    }
}

fn check_placeholders(field: &str, template: &str, wanted: &str) -> Result<(), String> {
    if !template.contains(wanted) {
        return Err(format!("{field}: the template must contain {wanted}"));
    }
    let mut rest = template.replace(wanted, "");
    while let Some(open) = rest.find('{') {
        let tail = &rest[open..];
        if let Some(close) = tail.find('}') {
            let name = &tail[..=close];
            if name.len() > 2
                && name[1..name.len() - 1]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(format!(
                    "{field}: unknown placeholder {name} (only {wanted} is replaced)"
                ));
            }
        }
        rest = rest[open + 1..].to_string();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Example {
        Example {
            id: "1".into(),
            query: "What is 2+3?".into(),
            target: "2+3=5\n#### 5".into(),
            answer: "5".into(),
            parent_id: None,
            meta: Default::default(),
        }
    }

    #[test]
    fn default_is_the_authors_recipe() {
        let t = PromptTemplate::default();
        assert_eq!(t.render_prompt(&example()), "What is 2+3?\nAnswer:");
        assert_eq!(t.render_completion(&example()), " 2+3=5\n#### 5\nDone.");
        assert_eq!(
            t.cut_at_stop(" 2+3=5\n#### 5\nDone. extra"),
            " 2+3=5\n#### 5"
        );
        assert!(t.validate().is_ok());
    }

    #[test]
    fn placeholders_are_checked() {
        let mut t = PromptTemplate {
            prompt: "{question}\nAnswer:".into(),
            ..Default::default()
        };
        assert!(t.validate().unwrap_err().contains("must contain {query}"));
        t.prompt = "{query} {question}".into();
        assert!(
            t.validate()
                .unwrap_err()
                .contains("unknown placeholder {question}")
        );
        t.prompt = "{query} a JSON {\"x\": 1}".into();
        assert!(t.validate().is_ok());
    }
}
