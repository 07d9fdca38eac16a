#!/usr/bin/env bash
# The paper's experiments on the synthetic task, on this machine
# (docs/reproduction.md). `make reproduce` runs both parts:
#
#   scripts/reproduce.sh sweep      (make reproduce-sweep)
# makes the data if missing, runs the sweep of examples/reproduce/sweep.toml
# (resuming a partial one), re-samples each run's last checkpoint with the
# paper's preambles for the robustness view, writes the report to
# runs/reproduce-sweep-report and copies its figures to docs/reproduction/.
#
#   scripts/reproduce.sh curation   (make reproduce-curation)
# for each seed of SEEDS (default "0 1 2"): makes that seed's data, writes
# its curation file from examples/reproduce/curation.toml.in and runs
# `premem curate` (resuming); then `premem curation-summary` over the seeds
# writes runs/reproduce-curation-report and its figure goes to
# docs/reproduction/.
#
# Each step says what it does and how long it took since the start.
# PREMEM: how to run premem (default: the debug binary, built first).
set -euo pipefail
cd "$(dirname "$0")/.."

PREMEM=${PREMEM:-target/debug/premem}
FIGURES=docs/reproduction
START=$(date +%s)

step() {
    echo
    echo "== $(date -u +%H:%M:%S) [$(elapsed)] $*"
}

elapsed() {
    local s=$(($(date +%s) - START))
    printf '%dm%02ds' $((s / 60)) $((s % 60))
}

sweep() {
    local data=data/reproduce out=runs/reproduce-sweep report=runs/reproduce-sweep-report
    step "1/4 data: $data (384 train, 500 test problems of 1-3 steps)"
    if [[ -f $data/train.jsonl && -f $data/test.jsonl && -f $data/tokenizer.json ]]; then
        echo "already there"
    else
        "$PREMEM" data synth --out "$data" --train 384 --test 500 --groups 1-3 --seed 0
    fi
    step "2/4 sweep: examples/reproduce/sweep.toml (9 runs; progress below, logs in premem-run/reproduce-sweep/logs)"
    "$PREMEM" sweep examples/reproduce/sweep.toml --no-report
    step "3/4 robustness: each run's last checkpoint re-sampled on its train problems with the preambles \"First\" and \"We know that\""
    local run
    for run in "$out"/*/; do
        [[ -f $run/run.json ]] || continue
        "$PREMEM" eval-run --run "$run" --splits train --last --sampling-of-run \
            --preambles-only --preamble First --preamble "We know that"
    done
    step "4/4 report: $report, figures to $FIGURES/"
    "$PREMEM" report "$out" --out "$report"
    mkdir -p "$FIGURES"
    local figure
    for figure in pm_vs_test baselines robustness calibration; do
        cp "$report/$figure.svg" "$FIGURES/sweep-$figure.svg"
    done
    step "done in $(elapsed): $report/report.md"
}

curation() {
    local out=runs/reproduce-curation report=runs/reproduce-curation-report
    local seeds=(${SEEDS:-0 1 2}) n=0 seed dirs=()
    mkdir -p "$out"
    for seed in "${seeds[@]}"; do
        n=$((n + 1))
        local data=data/reproduce-curation/seed-$seed spec=$out/seed-$seed.toml
        step "$n/${#seeds[@]} curation, seed $seed: data $data (128 train, 128 test problems of 1-3 steps, 6:3:1), then pm, iid, ifd, heuristic × 3 iterations (logs in premem-run/reproduce-curation-seed-$seed/logs)"
        if [[ -f $data/train.jsonl && -f $data/test.jsonl && -f $data/pool.jsonl && -f $data/tokenizer.json ]]; then
            echo "data already there"
        else
            "$PREMEM" data synth --out "$data" --train 128 --test 128 --pool-per-example 2 \
                --groups 1-3 --group-weights 6,3,1 --seed "$seed"
        fi
        sed "s/{seed}/$seed/g" examples/reproduce/curation.toml.in > "$spec"
        "$PREMEM" curate "$spec"
        dirs+=("$out/seed-$seed")
    done
    step "summary over ${#seeds[@]} seeds: $report, figure to $FIGURES/"
    "$PREMEM" curation-summary "${dirs[@]}" --out "$report"
    mkdir -p "$FIGURES"
    cp "$report/test-vs-examples.svg" "$FIGURES/curation-test-vs-examples.svg"
    step "done in $(elapsed): $report/summary.md"
}

case "${1:-}" in
    sweep) sweep ;;
    curation) curation ;;
    *)
        echo "usage: scripts/reproduce.sh sweep|curation" >&2
        exit 2
        ;;
esac
