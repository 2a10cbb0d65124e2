"""`python -m tools.gpu_code`: compile a set, check every build, print (and optionally write) the results."""
import argparse
import atexit
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from . import __doc__ as PACKAGE_DOC
from .builds import collect, full_matrix, representative
from .checks import check


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.gpu_code", description=PACKAGE_DOC.splitlines()[0])
    parser.add_argument("--set", choices=("representative", "full"), default="representative")
    parser.add_argument("--json", help="write every build's figures and problems here")
    parser.add_argument("--table", help="write the paper roofline table (markdown) here")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET"):
        sys.exit("tools.gpu_code: unset TRITON_INTERPRET (the interpreter does not compile)")
    cache = tempfile.mkdtemp(prefix="gpu_code_triton_cache_")
    os.environ["TRITON_CACHE_DIR"] = cache  # this run's cache only: CI must really compile
    atexit.register(shutil.rmtree, cache, True)
    builds = collect(full_matrix() if args.set == "full" else representative())
    failures = 0
    results = []
    for b in builds:
        problems = check(b)
        failures += bool(problems)
        results.append({**dataclasses.asdict(b), "name": b.name, "problems": problems})
        print(f"{'FAIL' if problems else 'ok  '} {b.name}: {b.registers} regs, {b.programs_per_sm}/SM, "
              f"{b.instructions_per_element:.1f} inst/elem (budget {b.budget:.1f}), loads {b.loads} stores "
              f"{b.stores}" + "".join(f"\n       {p}" for p in problems))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.table:
        from tools import roofline
        Path(args.table).write_text(roofline.table(results))
    print(f"{len(builds)} builds, {failures} with problems")
    return 1 if failures else 0
