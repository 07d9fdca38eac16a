//! The data order of a run: which examples it trains on (a data fraction),
//! in which order each epoch (seeded shuffle), and which part of a global
//! batch each rank takes. Pure functions of (seed, epoch, step): a resumed or
//! re-sharded run sees exactly the same batches.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Streams of the run seed, so the subset and the shuffles never share draws.
const SUBSET_STREAM: u64 = 1;
const EPOCH_STREAM: u64 = 2;
const PROBE_STREAM: u64 = 3;

fn rng(seed: u64, stream: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream << 48 | index);
    rng
}

/// The indices (sorted) of the `fraction` of `n` examples a run trains on.
pub fn subset(n: usize, fraction: f64, seed: u64) -> Vec<usize> {
    let keep = ((n as f64 * fraction).round() as usize)
        .clamp(1, n.max(1))
        .min(n);
    let mut all: Vec<usize> = (0..n).collect();
    if keep < n {
        all.shuffle(&mut rng(seed, SUBSET_STREAM, 0));
        all.truncate(keep);
        all.sort_unstable();
    }
    all
}

/// The plan of a run over `n` training examples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataPlan {
    /// Dataset indices trained on (the data fraction).
    pub subset: Vec<usize>,
    pub batch_size: usize,
    pub steps_per_epoch: u64,
    pub total_steps: u64,
    pub seed: u64,
}

impl DataPlan {
    /// `epochs` passes over the subset, or — with `keep_steps_of_epochs = K`
    /// — as many steps as K epochs over the full data would take (paper
    /// appendix A: half/quarter-data runs keep the step count of 3 full epochs).
    pub fn new(
        n: usize,
        fraction: f64,
        batch_size: usize,
        epochs: u64,
        keep_steps_of_epochs: Option<u64>,
        seed: u64,
    ) -> DataPlan {
        let subset = subset(n, fraction, seed);
        let steps_per_epoch = subset.len().div_ceil(batch_size) as u64;
        let total_steps = match keep_steps_of_epochs {
            Some(k) => k * n.div_ceil(batch_size) as u64,
            None => epochs * steps_per_epoch,
        };
        DataPlan {
            subset,
            batch_size,
            steps_per_epoch,
            total_steps,
            seed,
        }
    }

    /// Epoch of a 0-based step.
    pub fn epoch_of(&self, step: u64) -> u64 {
        step / self.steps_per_epoch
    }

    /// The subset in the order of `epoch`.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order = self.subset.clone();
        order.shuffle(&mut rng(self.seed, EPOCH_STREAM, epoch));
        order
    }

    /// Dataset indices of the global batch of a 0-based step (the last batch
    /// of an epoch may be smaller).
    pub fn batch(&self, step: u64) -> Vec<usize> {
        let order = self.epoch_order(self.epoch_of(step));
        let start = (step % self.steps_per_epoch) as usize * self.batch_size;
        order[start..(start + self.batch_size).min(order.len())].to_vec()
    }

    /// `count` fixed minibatches of `size` examples from the subset, for
    /// measurements at checkpoints (gradient variance): the same at every
    /// checkpoint of the run, drawn without replacement while the subset
    /// lasts, then from a fresh shuffle.
    pub fn probe_batches(&self, count: usize, size: usize) -> Vec<Vec<usize>> {
        let mut order = vec![];
        let mut round = 0;
        while order.len() < count * size && !self.subset.is_empty() {
            let mut more = self.subset.clone();
            more.shuffle(&mut rng(self.seed, PROBE_STREAM, round));
            order.extend(more);
            round += 1;
        }
        order
            .chunks(size.max(1))
            .take(count)
            .map(<[usize]>::to_vec)
            .collect()
    }

    /// Whether a 0-based step is the last of its epoch.
    pub fn ends_epoch(&self, step: u64) -> bool {
        (step + 1).is_multiple_of(self.steps_per_epoch)
    }
}

/// The contiguous part of a global batch that `rank` of `world` trains on.
pub fn rank_shard(batch: &[usize], rank: usize, world: usize) -> &[usize] {
    let per = batch.len().div_ceil(world);
    let start = (rank * per).min(batch.len());
    &batch[start..(start + per).min(batch.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_are_seeded_and_sized() {
        assert_eq!(subset(10, 1.0, 3), (0..10).collect::<Vec<_>>());
        let half = subset(10, 0.5, 3);
        assert_eq!(half.len(), 5);
        assert_eq!(half, subset(10, 0.5, 3));
        assert_ne!(half, subset(10, 0.5, 4));
        assert_eq!(subset(7473, 0.25, 0).len(), 1868);
    }

    #[test]
    fn epochs_cover_the_subset_in_different_orders() {
        let plan = DataPlan::new(10, 1.0, 4, 3, None, 9);
        assert_eq!((plan.steps_per_epoch, plan.total_steps), (3, 9));
        let epoch0: Vec<usize> = (0..3).flat_map(|s| plan.batch(s)).collect();
        let epoch1: Vec<usize> = (3..6).flat_map(|s| plan.batch(s)).collect();
        let mut sorted = epoch0.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(epoch0, epoch1);
        assert_eq!(plan.batch(2).len(), 2, "last batch of an epoch is partial");
        assert!(plan.ends_epoch(2) && !plan.ends_epoch(3));
    }

    #[test]
    fn fraction_runs_can_keep_the_full_step_count() {
        let full = DataPlan::new(100, 1.0, 10, 3, None, 0);
        let quarter = DataPlan::new(100, 0.25, 10, 3, Some(3), 0);
        assert_eq!(full.total_steps, 30);
        assert_eq!(quarter.total_steps, 30);
        assert_eq!(quarter.steps_per_epoch, 3);
        assert_eq!(quarter.epoch_of(29), 9);
    }

    #[test]
    fn probe_batches_are_fixed_and_distinct_while_the_data_lasts() {
        let plan = DataPlan::new(12, 1.0, 4, 1, None, 5);
        let batches = plan.probe_batches(3, 4);
        assert_eq!(batches, plan.probe_batches(3, 4));
        let mut all: Vec<usize> = batches.concat();
        all.sort();
        assert_eq!(all, (0..12).collect::<Vec<_>>());
        assert_ne!(batches[0], plan.batch(0), "not the training order");
        // Too little data: later batches repeat examples but are still full.
        let small = DataPlan::new(3, 1.0, 4, 1, None, 5).probe_batches(5, 2);
        assert_eq!(small.len(), 5);
        assert!(small.iter().all(|b| b.len() == 2));
    }

    #[test]
    fn rank_shards_partition_a_batch() {
        let batch: Vec<usize> = (0..10).collect();
        let shards: Vec<&[usize]> = (0..3).map(|r| rank_shard(&batch, r, 3)).collect();
        assert_eq!(
            shards,
            vec![&[0, 1, 2, 3][..], &[4, 5, 6, 7][..], &[8, 9][..]]
        );
    }
}
