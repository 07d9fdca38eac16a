#!/usr/bin/env bash
# The paper's experiments on the synthetic task, on this machine
# (docs/reproduction.md; the frozen protocol: examples/reproduce/PROTOCOL.md).
# `make reproduce` runs base, sweep and curation:
#
#   scripts/reproduce.sh base       (make reproduce-base)
# makes the data if missing (varied-style targets and a pretraining corpus
# disjoint from every split), pretrains the base model
# (examples/reproduce/base.toml) unless its last checkpoint is there,
# evaluates it on the test split and prints Gate 0.
#
#   scripts/reproduce.sh sweep      (make reproduce-sweep)
# runs the sweep of examples/reproduce/sweep.toml from the base (resuming a
# partial one), re-samples each run's last checkpoint with the paper's
# preambles for the robustness view, writes the report to
# runs/reproduce-sweep-report and copies its figures to docs/reproduction/.
#
#   scripts/reproduce.sh curation   (make reproduce-curation)
# for each seed of SEEDS (default "0 1 2 3 4"): makes that seed's data with
# the base's tokenizer, disjoint from its corpus, writes its curation file
# from examples/reproduce/curation.toml.in and runs `premem curate`
# (resuming); then `premem curation-summary` over the seeds writes
# runs/reproduce-curation-report and its figure goes to docs/reproduction/.
#
#   scripts/reproduce.sh templated-sweep | templated-curation
# the first measurement (templated traces, random initialisation;
# examples/reproduce/templated/), kept as the negative result it gave.
#
# Each step says what it does and how long it took since the start.
# PREMEM: how to run premem (default: the debug binary; `make reproduce`
# builds and uses the release one).
set -euo pipefail
cd "$(dirname "$0")/.."

PREMEM=${PREMEM:-target/debug/premem}
FIGURES=docs/reproduction
DATA=data/reproduce
BASE_RUN=runs/reproduce-base
BASE=$BASE_RUN/checkpoints/step-00004000
START=$(date +%s)

step() {
    echo
    echo "== $(date -u +%H:%M:%S) [$(elapsed)] $*"
}

elapsed() {
    local s=$(($(date +%s) - START))
    printf '%dm%02ds' $((s / 60)) $((s % 60))
}

have_data() {
    local file
    for file in "$@"; do
        [[ -f $file ]] || return 1
    done
}

base() {
    step "base 1/3 data: $DATA (256 train, 500 test problems of 1-3 steps, varied targets; a pretraining corpus of 64,000 problems none of whose queries a split has)"
    if have_data $DATA/{train,test,pool,pretrain}.jsonl $DATA/tokenizer.json $DATA/synth.json; then
        echo "already there"
    else
        "$PREMEM" data synth --out $DATA --style varied --train 256 --test 500 --groups 1-3 \
            --pretrain 64000 --pretrain-styles varied:3,terse:1 --pretrain-group-weights 7,14,1 --seed 0
    fi
    step "base 2/3 pretraining: examples/reproduce/base.toml (4,000 steps; 7 to 10 minutes on 2 cores)"
    if [[ -f $BASE/MANIFEST.json ]]; then
        echo "cached: $BASE (delete $BASE_RUN to pretrain again)"
    elif [[ -d $BASE_RUN ]]; then
        "$PREMEM" train --config examples/reproduce/base.toml --resume --no-progress
    else
        "$PREMEM" train --config examples/reproduce/base.toml --no-progress
    fi
    step "base 3/3 Gate 0: the base sampled on the 500 test problems (K = 8)"
    "$PREMEM" eval-run --run $BASE_RUN --splits test --last --sampling-of-run
    "$PREMEM" report $BASE_RUN --gates-only
}

sweep() {
    local out=runs/reproduce-sweep report=runs/reproduce-sweep-report
    [[ -f $BASE/MANIFEST.json ]] || base
    step "sweep 1/3: examples/reproduce/sweep.toml (9 runs from the base; progress below, logs in premem-run/reproduce-sweep/logs)"
    "$PREMEM" sweep examples/reproduce/sweep.toml --no-report
    step "sweep 2/3 robustness: each run's last checkpoint re-sampled on its train problems with the preambles \"First\" and \"We know that\""
    robustness "$out"
    step "sweep 3/3 report: $report, figures to $FIGURES/"
    "$PREMEM" report "$out" --out "$report"
    copy_figures "$report" sweep
    step "done in $(elapsed): $report/report.md"
}

robustness() {
    local run
    for run in "$1"/*/; do
        [[ -f $run/run.json ]] || continue
        "$PREMEM" eval-run --run "$run" --splits train --last --sampling-of-run \
            --preambles-only --preamble First --preamble "We know that"
    done
}

copy_figures() {
    local report=$1 prefix=$2 figure
    mkdir -p "$FIGURES"
    for figure in pm_vs_test baselines robustness calibration; do
        cp "$report/$figure.svg" "$FIGURES/$prefix-$figure.svg"
    done
}

curation() {
    local out=runs/reproduce-curation report=runs/reproduce-curation-report
    local seeds=(${SEEDS:-0 1 2 3 4}) n=0 seed dirs=()
    [[ -f $BASE/MANIFEST.json ]] || base
    mkdir -p "$out"
    for seed in "${seeds[@]}"; do
        n=$((n + 1))
        local data=data/reproduce-curation/seed-$seed spec=$out/seed-$seed.toml
        step "curation $n/${#seeds[@]}, seed $seed: data $data (128 train, 300 test problems of 1-3 steps, 1:1:1, varied), then pm, iid, ifd, heuristic × 3 iterations from the base (logs in premem-run/reproduce-curation-seed-$seed/logs)"
        if have_data $data/{train,test,pool}.jsonl $data/tokenizer.json; then
            echo "data already there"
        else
            "$PREMEM" data synth --out "$data" --style varied --train 128 --test 300 \
                --pool-per-example 2 --groups 1-3 --tokenizer $DATA/tokenizer.json \
                --disjoint-from $DATA/pretrain.jsonl --seed "$seed"
        fi
        sed "s/{seed}/$seed/g" examples/reproduce/curation.toml.in > "$spec"
        "$PREMEM" curate "$spec"
        dirs+=("$out/seed-$seed")
    done
    step "curation summary over ${#seeds[@]} seeds: $report, figure to $FIGURES/"
    "$PREMEM" curation-summary "${dirs[@]}" --out "$report"
    mkdir -p "$FIGURES"
    cp "$report/test-vs-examples.svg" "$FIGURES/curation-test-vs-examples.svg"
    step "done in $(elapsed): $report/summary.md"
}

templated_sweep() {
    local data=data/reproduce-templated out=runs/reproduce-templated-sweep
    local report=runs/reproduce-templated-sweep-report
    step "1/4 data: $data (384 train, 500 test problems of 1-3 steps, templated targets)"
    if have_data $data/{train,test}.jsonl $data/tokenizer.json; then
        echo "already there"
    else
        "$PREMEM" data synth --out "$data" --train 384 --test 500 --groups 1-3 --seed 0
    fi
    step "2/4 sweep: examples/reproduce/templated/sweep.toml (9 runs from random weights)"
    "$PREMEM" sweep examples/reproduce/templated/sweep.toml --no-report
    step "3/4 robustness"
    robustness "$out"
    step "4/4 report: $report"
    "$PREMEM" report "$out" --out "$report"
    copy_figures "$report" templated-sweep
    step "done in $(elapsed): $report/report.md"
}

templated_curation() {
    local out=runs/reproduce-templated-curation report=runs/reproduce-templated-curation-report
    local seeds=(${SEEDS:-0 1 2}) seed dirs=()
    mkdir -p "$out"
    for seed in "${seeds[@]}"; do
        local data=data/reproduce-templated-curation/seed-$seed spec=$out/seed-$seed.toml
        step "templated curation, seed $seed"
        if ! have_data $data/{train,test,pool}.jsonl $data/tokenizer.json; then
            "$PREMEM" data synth --out "$data" --train 128 --test 128 --pool-per-example 2 \
                --groups 1-3 --group-weights 6,3,1 --seed "$seed"
        fi
        sed "s/{seed}/$seed/g" examples/reproduce/templated/curation.toml.in > "$spec"
        "$PREMEM" curate "$spec"
        dirs+=("$out/seed-$seed")
    done
    "$PREMEM" curation-summary "${dirs[@]}" --out "$report"
    mkdir -p "$FIGURES"
    cp "$report/test-vs-examples.svg" "$FIGURES/templated-curation-test-vs-examples.svg"
    step "done in $(elapsed): $report/summary.md"
}

case "${1:-}" in
    base) base ;;
    sweep) sweep ;;
    curation) curation ;;
    templated-sweep) templated_sweep ;;
    templated-curation) templated_curation ;;
    *)
        echo "usage: scripts/reproduce.sh base|sweep|curation|templated-sweep|templated-curation" >&2
        exit 2
        ;;
esac
