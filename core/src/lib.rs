//! premem-core: what every premem process shares and that needs no libtorch —
//! job specs, datasets and answer checking, data order, the synthetic task,
//! the object-store layout of runs, evaluation result files, the P-M accuracy
//! formulas ([`pm`]), the sampling settings ([`sampling`]) and the retry
//! policy ([`retry`]). The reports (`premem-report`) and curation
//! (`premem-curation`) are built on it.

pub mod advice;
pub mod answer;
pub mod baselines;
pub mod checkpoint;
pub mod crossval;
pub mod dataset;
pub mod error_text;
pub mod files;
pub mod lease;
pub mod order;
pub mod plan;
pub mod pm;
pub mod provenance;
pub mod results;
pub mod retry;
pub mod sampling;
pub mod spec;
pub mod store;
pub mod store_client;
pub mod sweep;
pub mod synth;
pub mod template;

pub use answer::AnswerStyle;
pub use dataset::{Dataset, DatasetSpec, Example, Split};
pub use sampling::SamplingSpec;
pub use spec::JobSpec;
pub use store::{BlockingStore, Store, StoreError};
pub use template::PromptTemplate;
