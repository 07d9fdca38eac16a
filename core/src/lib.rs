//! premem-core: what every premem process shares and that needs no libtorch —
//! job and sweep specs, datasets and answer checking, the P-M accuracy formulas
//! and reports, and the object-store layout. Filled by the trainer, evaluator
//! and metrics issues; see `DESIGN.md` in the project's shared notes.
