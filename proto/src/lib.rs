//! premem-proto: the versioned gRPC protocol (`premem.v1`) between the
//! coordinator, trainer ranks and evaluators. Filled by the distributed-runtime
//! issue.
