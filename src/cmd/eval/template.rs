//! The prompt template `premem eval` renders with: the run's own when the
//! checkpoint is a run (its newest checkpoint) or one a run published
//! (`<run>/checkpoints/step-N`), read from the run's `run.json`; else
//! premem's default; either with `--prompt-template` /
//! `--completion-template` over it.

use anyhow::{Context, Result, bail};
use premem_core::PromptTemplate;
use premem_core::spec::record::read_run_record;
use premem_core::storage::checkpoint::RUN_FILE;
use premem_core::storage::store::{BlockingStore, Store};

/// The template flags of `premem eval`.
#[derive(clap::Args)]
pub struct TemplateArgs {
    /// The model input, with `{query}` for the example's query (the job
    /// spec's `prompt.prompt`). Default: the run's, else "{query}\nAnswer:".
    #[arg(long)]
    prompt_template: Option<String>,
    /// The target after the prompt, with `{target}` for the solution trace
    /// (`prompt.completion`). Default: the run's, else " {target}\nDone.".
    #[arg(long)]
    completion_template: Option<String>,
}

/// The template for `checkpoint`, and where it came from (for the log).
pub fn resolve(args: &TemplateArgs, checkpoint: &str) -> Result<(PromptTemplate, String)> {
    let runs = run_of(checkpoint)
        .into_iter()
        .chain([checkpoint.to_string()]);
    let mut found = None;
    for run in runs {
        if let Some(template) = run_template(&run)? {
            found = Some((template, format!("the run's ({run}/{RUN_FILE})")));
            break;
        }
    }
    let (mut template, source) =
        found.unwrap_or_else(|| (PromptTemplate::default(), "premem's default".to_string()));
    if let Some(prompt) = &args.prompt_template {
        template.prompt = prompt.clone();
    }
    if let Some(completion) = &args.completion_template {
        template.completion = completion.clone();
    }
    if let Err(e) = template.validate() {
        bail!(
            "{} (from --prompt-template/--completion-template or {source})",
            flagged(&e)
        );
    }
    Ok((template, source))
}

/// A spec key in a message as the flag that sets it.
fn flagged(message: &str) -> String {
    message
        .replace("prompt.prompt", "--prompt-template")
        .replace("prompt.completion", "--completion-template")
}

/// The run a published checkpoint location belongs to: the location less
/// its `/checkpoints/step-N`.
fn run_of(checkpoint: &str) -> Option<String> {
    let trimmed = checkpoint.trim_end_matches('/');
    let (parent, step) = trimmed.rsplit_once('/')?;
    premem_core::storage::checkpoint::parse_step_name(step)?;
    let run = parent.strip_suffix("/checkpoints")?;
    Some(if run.is_empty() {
        "/".into()
    } else {
        run.into()
    })
}

/// The template of the run at `run`, when it has a `run.json`.
fn run_template(run: &str) -> Result<Option<PromptTemplate>> {
    let Ok(store) = Store::open_existing(run) else {
        return Ok(None);
    };
    let store = BlockingStore::new(store)?;
    if !store.run(store.store().exists(RUN_FILE))? {
        return Ok(None);
    }
    let record = store
        .run(read_run_record(store.store()))
        .with_context(|| format!("reading the run of the checkpoint, {run}"))?;
    Ok(Some(record.spec.prompt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_checkpoints_run_is_its_location_less_the_step() {
        assert_eq!(
            run_of("runs/a/checkpoints/step-00000008").as_deref(),
            Some("runs/a")
        );
        assert_eq!(
            run_of("s3://b/runs/a/checkpoints/step-00000008/").as_deref(),
            Some("s3://b/runs/a")
        );
        assert_eq!(run_of("models/llama"), None);
        assert_eq!(run_of("runs/a/checkpoints/latest"), None);
        assert_eq!(run_of("runs/a/resume/step-00000008"), None);
    }
}
