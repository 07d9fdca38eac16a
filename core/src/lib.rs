//! premem-core: what every premem process shares and that needs no libtorch —
//! job specs, datasets and answer checking, data order, the synthetic task,
//! and the object-store layout of runs. The P-M accuracy formulas land here
//! with the metrics issue.

pub mod answer;
pub mod checkpoint;
pub mod dataset;
pub mod order;
pub mod spec;
pub mod store;
pub mod synth;
pub mod template;

pub use answer::AnswerStyle;
pub use dataset::{Dataset, DatasetSpec, Example};
pub use spec::JobSpec;
pub use store::{BlockingStore, Store, StoreError};
pub use template::PromptTemplate;
