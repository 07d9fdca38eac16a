//! premem-core: what every premem process shares and that needs no libtorch.
//! Five folders, imports running one way (`storage` ← `data` ← `science` ←
//! `arch` ← `spec` ← `testing`; a module imports only from its own folder or
//! the ones before it):
//!
//! - [`storage`]: the object store, the layout of a run in it (checkpoints,
//!   manifests, resume states), leases, atomic local files;
//! - [`data`]: datasets and answer checking, prompt templates, sampling
//!   settings, data order, evaluation result rows, the synthetic task;
//! - [`science`]: the P-M accuracy formulas, out-of-sample R², the baselines
//!   and the advice;
//! - [`arch`]: model architectures from a Hugging Face `config.json` (the
//!   families' keys, defaults and switches), for the plan and the model;
//! - [`spec`]: the job spec, its memory plan, sweeps and provenance;
//! - `testing` (feature `testing`, for tests only): the fixtures every
//!   crate's tests share.
//!
//! [`retry`] and [`error_text`] are leaves every folder may use. The reports
//! (`premem-report`) and curation (`premem-curation`) are built on this crate.

pub mod arch;
pub mod data;
pub mod error_text;
pub mod retry;
pub mod science;
pub mod spec;
pub mod storage;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use data::answer::AnswerStyle;
pub use data::dataset::{Dataset, DatasetSpec, Example, Split};
pub use data::sampling::SamplingSpec;
pub use data::template::PromptTemplate;
pub use spec::JobSpec;
pub use storage::store::{BlockingStore, Store, StoreError};
