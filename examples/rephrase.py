#!/usr/bin/env python3
"""A curation generator for premem's synthetic task (Python 3 standard library only).

premem curate runs it when the curation spec has

    [source]
    generator = { command = ["python3", "examples/rephrase.py"], attempts = 3, timeout_s = 300 }

The protocol (any program can implement it):

stdin: one JSON object, then end of input:

    {"iteration": 2, "seed": 0, "attempt": 1, "count": 3,
     "parents": [{"id": "train-00007", "question": "...", "answer": "...\\n#### 16"}, ...]}

    `parents` has exactly `count` entries: premem lists the chosen parents
    round-robin (a parent may appear more than once). `answer` is the parent's
    full solution trace. `attempt` counts from 1 (premem retries failed tries).

stdout: JSON Lines, exactly `count` objects, one per new example:

    {"id": "train-00007-r2-0", "question": "...", "answer": "...\\n#### 21", "parent_id": "train-00007"}

    `question`, `answer` (a trace ending in a `#### N` line) and `parent_id`
    (one of the ids received) are required; `id` is optional (premem hashes
    the content when it is missing) and must be new. No other keys.

exit status 0; anything else, or a wrong line, fails the try. Diagnostics go
to stderr (premem shows the last lines).

This generator derives from each parent a problem of the same shape: the
same number of groups, the same kind of change (buying or giving away), new
names, items and numbers, and a solution trace in the task's format with the
steps in a random order. Its output depends only on the input (seeded by
seed, iteration and position).
"""

import json
import random
import re
import sys

NAMES = [
    ("Mia", "She"), ("Leo", "He"), ("Ana", "She"), ("Omar", "He"),
    ("Zoe", "She"), ("Ravi", "He"), ("Ines", "She"), ("Tom", "He"),
    ("Yara", "She"), ("Ben", "He"), ("Lina", "She"), ("Kai", "He"),
]
ITEMS = ["apples", "pens", "stickers", "marbles", "cookies", "books", "shells",
         "coins", "cards", "plums", "beads", "eggs"]
CONTAINERS = ["bags", "boxes", "jars", "baskets", "trays", "packs", "crates", "tins"]

GROUP = re.compile(r"(\d+) (\w+) with (\d+) (\w+) each")
CHANGE = re.compile(r"\b(buys|gives away) (\d+)\b")


def shape(question):
    """(number of groups, True when the parent buys more) of a synthetic-task question."""
    groups = GROUP.findall(question)
    change = CHANGE.search(question)
    if not groups or change is None:
        return None
    return len(groups), change.group(1) == "buys"


def join_and(parts):
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def derive(num_groups, buys, rng):
    """A new problem with this shape: (question, solution trace)."""
    name, pronoun = rng.choice(NAMES)
    item = rng.choice(ITEMS)
    containers = rng.sample(CONTAINERS, num_groups)
    groups = [(c, rng.randint(2, 6), rng.randint(2, 6)) for c in containers]
    total = sum(g * n for _, g, n in groups)
    change = rng.randint(1, 6) if buys else -rng.randint(1, min(6, total - 1))
    answer = total + change

    described = [f"{g} {c} with {n} {item} each" for c, g, n in groups]
    if change >= 0:
        told = f"{pronoun} buys {change} more {item}."
    else:
        told = f"{pronoun} gives away {-change} {item}."
    question = f"{name} has {join_and(described)}. {told} How many {item} does {name} have now?"

    order = list(groups)
    rng.shuffle(order)
    lines = [f"{g} {c} of {n} {item} is {g}*{n}={g * n} {item}." for c, g, n in order]
    terms = [g * n for _, g, n in groups]
    rng.shuffle(terms)
    lines.append(f"Together that is {'+'.join(map(str, terms))}={total} {item}.")
    if change >= 0:
        lines.append(f"Buying {change} more makes {total}+{change}={answer} {item}.")
    else:
        lines.append(f"Giving away {-change} leaves {total}-{-change}={answer} {item}.")
    lines.append(f"#### {answer}")
    return question, "\n".join(lines)


def main():
    request = json.load(sys.stdin)
    seed, iteration = request["seed"], request["iteration"]
    parents = request["parents"]
    if len(parents) != request["count"]:
        sys.exit(f"rephrase.py: got {len(parents)} parents for count {request['count']}")
    out = []
    for j, parent in enumerate(parents):
        found = shape(parent["question"])
        if found is None:
            sys.exit(f"rephrase.py: parent {parent['id']!r} is not a synthetic-task problem")
        rng = random.Random(f"{seed}/{iteration}/{j}/{parent['id']}")
        question, answer = derive(*found, rng)
        out.append({
            "id": f"{parent['id']}-r{iteration}-s{seed}-{j}",
            "question": question,
            "answer": answer,
            "parent_id": parent["id"],
        })
    for row in out:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
