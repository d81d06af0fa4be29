"""Can a completion forge a pass? pass@1 of the hostile HumanEval completions.

Runs every completion of ``tests/test_verdicts.HOSTILE_HUMANEVAL`` (each tries to pass without
solving: early exit 0, exit hooks, always-equal objects, reading the tests, patched builtins,
forged output, signals …) on HumanEval/0 and /2 through ``evaluate_task`` and writes the
pass@1 and the statuses. Every run should fail.

    python studies/hostile_verdicts.py --out studies/results/hostile_verdicts_rerun.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_verdicts import hostile_results  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()
    records = hostile_results()
    passed = [(r["case"], r["task"]) for r in records if r["passed"][0]]
    result = {"runs": len(records), "passed": len(passed), "pass@1": 100.0 * len(passed) / len(records),
              "passing": passed, "statuses": Counter(r["statuses"][0] for r in records)}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
