"""Compile every GPU kernel offline and read its SASS: the instrument when no GPU is at hand.

    python -m tools.gpu_code [--set representative|full] [--json OUT] [--table OUT.md]

Triton kernels are compiled with triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32)) for
sm_80 and sm_90, with exactly the arguments our launchers pass: the launchers run on CPU tensors while
JITFunction.run is replaced by a recorder, and the recorded arguments go through Triton's own binder, so
signature, constexprs, num_warps and the 16-byte / divisible-by-16 specialisations are the runtime's.
csrc/cuda/*.cu are built to cubins with nvcc. SASS comes from the cuobjdump/nvdisasm shipped in Triton's
wheel. Per build we report registers, spills, the global access widths and the hot loop's SASS
instructions per element, and check them against the limits below (`check`).

Compiled results are cached in this process only (the Triton cache goes to a temporary directory that is
removed at exit): every run really compiles. Must run without TRITON_INTERPRET (a subprocess of the tests).

One module per job: machine (the H100/H200 model and the issue budget), sass (reading nvdisasm/cuobjdump output),
launches (what our launchers launch, recorded), builds (compiling Triton launches; the sets), cuda (nvcc builds),
analysis (a Build's figures), checks (the limits and the documented allowances), cli (`python -m tools.gpu_code`).
"""
from .analysis import ELEMENT_SIZE, Build, analyse
from .builds import collect, compile_record, full_matrix, representative, triton_builds
from .checks import allowance, check
from .cuda import _CUDA_OPS, cuda_builds, nvcc  # noqa: F401  (_CUDA_OPS: tests read it)
from .launches import BN_SHAPES, DTYPES, ELEMENTWISE_NUMEL, KERNELS, elements_per_thread, kernel_label, launches
from .machine import (
                      H100,
                      H200,
                      MIN_PROGRAMS_PER_SM,
                      Machine,
                      instruction_budget,
                      max_instructions_per_element,
                      resident_programs,
)
from .sass import Sass, count_issued, disassemble, global_accesses, hot_path, parse_resources, parse_sass

__all__ = ["ELEMENT_SIZE", "Build", "analyse", "collect", "compile_record", "full_matrix", "representative",
           "triton_builds", "allowance", "check", "cuda_builds", "nvcc", "BN_SHAPES", "DTYPES", "ELEMENTWISE_NUMEL",
           "KERNELS", "elements_per_thread", "kernel_label", "launches", "H100", "H200", "MIN_PROGRAMS_PER_SM",
           "Machine", "instruction_budget", "max_instructions_per_element", "resident_programs", "Sass",
           "count_issued", "disassemble", "global_accesses", "hot_path", "parse_resources", "parse_sass"]
