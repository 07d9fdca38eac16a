"""Reads the event files of a directory with TensorBoard's own loader and
prints its scalars as JSON: {tag: [[step, value], ...]}.

Usage: read_events.py LOGDIR (tracking/tests/tensorboard.rs runs it)."""

import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main():
    accumulator = EventAccumulator(sys.argv[1])
    accumulator.Reload()
    scalars = {
        tag: [[event.step, event.value] for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }
    print(json.dumps(scalars))


if __name__ == "__main__":
    main()
