//! premem-coordinator: the only stateful service — ranks and rendezvous,
//! checkpoints, evaluation tasks and their leases, P-M aggregation, curation and
//! sweeps. It does not link libtorch. Filled by the distributed-runtime issue.
