"""A Build: one compiled kernel's figures as SASS shows them (registers, spills, access widths, hot-loop instructions
per element against the issue budget)."""
import dataclasses

from .machine import instruction_budget, resident_programs
from .sass import Sass, count_issued, global_accesses, hot_path


@dataclasses.dataclass
class Build:
    kernel: str
    source: str          # "triton" or "cuda"
    dtype: str
    arch: int
    case: str
    family: str
    registers: int = 0
    stack: int = 0
    local: int = 0
    spill_instructions: int = 0
    shared: int = 0
    warps: int = 0
    programs_per_sm: int = 0
    hot: str = ""
    hot_instructions: int = 0
    elements_per_thread: float = 0.0
    instructions_per_element: float = 0.0
    padding: float = 1.0
    bytes_per_element: int = 0
    budget: float = 0.0
    loads: dict = dataclasses.field(default_factory=dict)
    stores: dict = dataclasses.field(default_factory=dict)
    tensor_bits_loaded_128: int = 0   # bits of the hot path's 128-bit loads, per thread per pass
    tensor_bits_expected: int = 0     # bits of tensor data read per thread per pass
    store_bits_128: int = 0
    store_bits_expected: int = 0
    vector: bool = False              # every tensor byte of the hot path moves in 128-bit accesses
    inputs: int = 0                   # CUDA: tensors read per element

    @property
    def name(self):
        return f"{self.source}:{self.kernel}:{self.dtype}:sm_{self.arch}:{self.case}"


ELEMENT_SIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


def analyse(build, sass: Sass, resources, elements, reads, writes):
    build.registers = resources.get("REG", 0)
    build.stack = resources.get("STACK", 0)
    build.local = resources.get("LOCAL", 0)
    build.spill_instructions = sum(1 for _, op, _ in sass.instructions if op.startswith(("LDL", "STL")))
    build.programs_per_sm = resident_programs(build.registers, build.warps, build.shared, build.arch)
    hot, body = hot_path(sass)
    build.hot = hot
    build.hot_instructions = count_issued(body)
    size = ELEMENT_SIZE[build.dtype]
    acc = global_accesses(body)
    build.loads = {str(w): acc["load"].count(w) for w in sorted(set(acc["load"]))}
    build.stores = {str(w): acc["store"].count(w) for w in sorted(set(acc["store"]))}
    build.bytes_per_element = (reads + writes) * size
    if hot == "loop" and build.source == "triton" and build.family != "finish" and reads:
        # ptxas unrolls loops (4x is common): count the elements whose data the loop body loads. Reduction
        # and elementwise loops load per-channel values before the loop, so every load here is tensor data.
        loaded = sum(acc["load"]) / (reads * size * 8)
        if elements and loaded >= elements and abs(loaded / elements - round(loaded / elements)) < 1e-6:
            elements = loaded
    if build.family != "finish" and elements:
        build.elements_per_thread = elements
        build.instructions_per_element = build.hot_instructions / elements * build.padding
        build.budget = instruction_budget(build.bytes_per_element)
        build.tensor_bits_expected = int(elements * reads * size * 8)
        build.tensor_bits_loaded_128 = 128 * acc["load"].count(128)
        build.store_bits_expected = int(elements * writes * size * 8)
        build.store_bits_128 = 128 * acc["store"].count(128)
        build.vector = (build.tensor_bits_loaded_128 >= build.tensor_bits_expected
                        and build.store_bits_128 >= build.store_bits_expected)
