//! premem-evaluator: the stateless worker that samples answers and scores
//! target-trace perplexity for each evaluation task. Filled by the evaluator
//! issue.
