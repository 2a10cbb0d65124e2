"""csrc/cuda/*.cu built to cubins by nvcc, every elementwise_kernel instantiation read as a Build."""
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .analysis import ELEMENT_SIZE, Build, analyse
from .sass import disassemble, global_accesses, hot_path

ROOT = Path(__file__).resolve().parents[2]
_CACHE = {}

CUDA_FLAGS = ["-std=c++17", "-O3", "-I", "csrc", "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
              "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__", "--expt-relaxed-constexpr"]
_CUDA_TYPES = {"__half": "float16", "__nv_bfloat16": "bfloat16", "float": "float32", "double": "float64"}
_CUDA_OPS = {"SwishForward": "swish_forward", "SwishBackward": "swish_backward",
             "MishForward": "mish_forward", "MishBackward": "mish_backward"}


def nvcc():
    found = shutil.which("nvcc")
    for d in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if not found and d and Path(d, "bin", "nvcc").exists():
            found = str(Path(d, "bin", "nvcc"))
    return found


def cuda_builds(arch):
    """Every elementwise_kernel instantiation of csrc/cuda/*.cu, compiled for `arch` by nvcc: the aligned
    path (all pointers 16-byte aligned alike) and the misaligned one (an input offset from the output)."""
    key = ("cuda", arch)
    if key not in _CACHE:
        builds = []
        for cu in sorted(Path(ROOT, "csrc", "cuda").glob("*.cu")):
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp, "k.cubin")
                subprocess.run([nvcc(), "-cubin", *CUDA_FLAGS, f"-arch=sm_{arch}", str(cu), "-o", str(out)],
                               cwd=ROOT, check=True, capture_output=True, text=True)
                sass, resources = disassemble(out.read_bytes())
            names = subprocess.run(["c++filt"], input="\n".join(sass), capture_output=True, text=True,
                                   check=True).stdout.splitlines()
            for mangled, pretty in zip(sass, names):
                m = re.search(r"elementwise_kernel<(\w+), (\d+), [^,>]*?(\w+)(?:, (true|false))?>", pretty)
                if not m:
                    continue
                dtype, inputs, op = _CUDA_TYPES[m.group(1)], int(m.group(2)), _CUDA_OPS[m.group(3)]
                case = "misaligned" if m.group(4) == "false" else "aligned"
                build = Build(f"{cu.stem}:{op}", "cuda", dtype, arch, case, "elementwise", warps=8)
                _, body = hot_path(sass[mangled])
                # Elements per thread per hot-loop iteration: the output always moves in 16-byte packs.
                elements = global_accesses(body)["store"].count(128) * 16 / ELEMENT_SIZE[dtype]
                analyse(build, sass[mangled], resources.get(mangled, {}), elements, inputs, 1)
                build.inputs = inputs
                builds.append(build)
        _CACHE[key] = builds
    return _CACHE[key]
