#!/usr/bin/env bash
# The paper's experiments on the synthetic task, on this machine
# (docs/reproduction.md): `make reproduce-sweep` runs
#   scripts/reproduce.sh sweep
# which makes the data if missing, runs the sweep of
# examples/reproduce/sweep.toml (resuming a partial one), re-samples each
# run's last checkpoint with the paper's preambles for the robustness view,
# writes the report to runs/reproduce-sweep-report and copies its figures to
# docs/reproduction/. Each step says what it does and how long it took.
#
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

case "${1:-}" in
    sweep) sweep ;;
    *)
        echo "usage: scripts/reproduce.sh sweep" >&2
        exit 2
        ;;
esac
