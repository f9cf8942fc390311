"""Scores a run of concurry's suite (``scripts/concurry-suite --junitxml=X``) against the tests
concurry 0.13.2 passes on itself (``concurry_passes.txt``, recorded by running the same suite on
concurry 0.13.2 in sync/thread/process/asyncio modes, less the excluded internals of
``exclusions.py``). Prints the share passed and what did not pass; exits 1 below ``--floor``.

Usage: python check.py RUN.xml [--floor 0.95]
       python check.py --record CONCURRY_RUN.xml   (rewrites concurry_passes.txt)

How concurry_passes.txt was recorded (Python 3.11, no Ray): a venv with ``concurry==0.13.2``,
``pytest``, ``pytest-asyncio==1.5.0`` and ``pytest-timeout``; the sdist's ``tests/`` run with its
own conftest (``src/`` removed, so the installed concurry is tested): ``pytest tests -o
addopts="" -o asyncio_default_fixture_loop_scope=function --timeout=120 --junitxml=X``; then
``check.py --record X``. There concurry passed 2126, failed 8 (five microsecond-scale speed
targets, an aiohttp test, two global_config tests) and skipped 166."""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from exclusions import excluded

BASELINE = Path(__file__).with_name("concurry_passes.txt")


def outcomes(junit: str) -> dict[str, str]:
    """Test id (as in exclusions.py: ``core/x/test_y.py::Class::test[mode]``) -> passed, failed
    or skipped."""
    out: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        classname = case.get("classname") or ""
        if not classname.startswith("tests."):
            continue  # a module-level entry (collection skipped or failed): no test id
        modules = [p for p in classname.split(".")[1:] if not p[:1].isupper()]
        classes = [p for p in classname.split(".")[1:] if p[:1].isupper()]
        test_id = "/".join(modules) + ".py" + "".join(f"::{c}" for c in classes) + f"::{case.get('name')}"
        kinds = {child.tag for child in case}
        out[test_id] = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("junit")
    parser.add_argument("--floor", type=float, default=0.95)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    if not Path(args.junit).is_file():
        print(f"concurry suite: no results in {args.junit}: the suite did not run (see its log)")
        return 1
    run = outcomes(args.junit)
    if args.record:
        passed = sorted(t for t, o in run.items() if o == "passed")
        kept = [t for t in passed if not excluded(t)]
        BASELINE.write_text("".join(f"{t}\n" for t in kept))
        excluded_count = len(passed) - len(kept)
        print(f"concurry passes {len(passed)} on itself; {excluded_count} excluded internals; recorded {len(kept)}")
        return 0
    baseline = BASELINE.read_text().split()
    missed = [t for t in baseline if run.get(t) != "passed"]
    share = 1 - len(missed) / len(baseline)
    print(
        f"concurry suite: {len(baseline) - len(missed)} of the {len(baseline)} tests concurry passes on itself "
        f"pass here ({share:.1%}; floor {args.floor:.0%})"
    )
    for test_id in missed:
        print(f"  {run.get(test_id, 'not run')}: {test_id}")
    return 0 if share >= args.floor else 1


if __name__ == "__main__":
    sys.exit(main())
