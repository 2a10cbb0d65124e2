"""Instruction counts of labelled regions, from one process under valgrind --tool=callgrind (repeatable on a
shared machine where wall clock is not). Used by per_call_cost.py, cpu_bn_swish_speed.py and
cpu_bn_kernels_speed.py, each of which re-runs itself under valgrind with --inside-callgrind:

    counts = callgrind.run([__file__, "--inside-callgrind", ...])   # outside: [(label, instructions), ...]
    helper = callgrind.helper()                                       # inside: helper.cg_zero(); ...;
                                                                      #   helper.cg_dump(b"label")
Each cg_dump writes the instructions since the last cg_zero under its label; labels come back in dump order.
"""
import ctypes
import os
import re
import subprocess
import sys
import tempfile
from typing import List, Sequence, Tuple

_HELPER_ENV = "SWISHKERNELS_CALLGRIND_HELPER"
_HELPER_SOURCE = r"""
#include <valgrind/callgrind.h>
void cg_zero(void) { CALLGRIND_ZERO_STATS; }
void cg_dump(const char* label) { CALLGRIND_DUMP_STATS_AT(label); }
"""


def helper() -> ctypes.CDLL:
    """Inside valgrind: the small library whose cg_zero / cg_dump(label) are callgrind's client requests."""
    return ctypes.CDLL(os.environ[_HELPER_ENV])


def run(script_args: Sequence[str], timeout: float = 3600) -> List[Tuple[str, int]]:
    """Runs `python *script_args` under callgrind (1 OpenMP thread); returns (label, instructions) per cg_dump,
    in the order of the dumps."""
    with tempfile.TemporaryDirectory() as tmp:
        source, library = os.path.join(tmp, "cg.c"), os.path.join(tmp, "libcg.so")
        with open(source, "w") as f:
            f.write(_HELPER_SOURCE)
        subprocess.run(["cc", "-shared", "-fPIC", "-O1", source, "-o", library], check=True)
        env = dict(os.environ, **{_HELPER_ENV: library}, OMP_NUM_THREADS="1")
        command = ["valgrind", "--tool=callgrind", "--collect-atstart=yes", f"--callgrind-out-file={tmp}/cg.out",
                   sys.executable, *map(str, script_args)]
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=timeout)
        dumps = [name for name in os.listdir(tmp) if name.startswith("cg.out.")]
        counts = []
        for name in sorted(dumps, key=lambda name: int(name.rpartition(".")[2])):
            with open(os.path.join(tmp, name)) as f:
                text = f.read()
            label = re.search(r"^desc: Trigger: Client Request: (.*)$", text, re.M)
            total = re.search(r"^(?:totals|summary): (\d+)", text, re.M)
            if label and total:
                counts.append((label.group(1), int(total.group(1))))
        return counts
