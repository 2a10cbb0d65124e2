"""Reading SASS: nvdisasm/cuobjdump (shipped in Triton's wheel) output parsed into instructions, loops, global
access widths and the hot loop."""
import dataclasses
import re
import subprocess
import tempfile
from pathlib import Path

NVIDIA_BIN = None


def _tool(name):
    global NVIDIA_BIN
    if NVIDIA_BIN is None:
        import triton
        NVIDIA_BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    return str(NVIDIA_BIN / name)


_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_TARGET = re.compile(r"(\.L_x_\d+)")
_FUNCTION = re.compile(r"^\s*\.text\.(\S+):")


@dataclasses.dataclass
class Sass:
    """One function's SASS: (address, opcode, operands) per instruction, and label addresses."""
    instructions: list
    labels: dict

    def loops(self):
        """(start, end) address ranges closed by a backward branch, innermost first."""
        found = []
        for address, opcode, operands in self.instructions:
            if opcode.startswith("BRA") or opcode.startswith("BRX"):
                target = _TARGET.search(operands)
                if target and self.labels.get(target.group(1), address + 1) <= address:
                    found.append((self.labels[target.group(1)], address))
        return sorted(found, key=lambda r: r[1] - r[0])

    def between(self, start, end):
        return [i for i in self.instructions if start <= i[0] <= end]


def parse_sass(text):
    """nvdisasm output -> {function name: Sass}."""
    functions, current, pending = {}, None, []
    for line in text.splitlines():
        m = _FUNCTION.match(line)
        if m:
            current = functions.setdefault(m.group(1), Sass([], {}))
            continue
        if current is None:
            continue
        m = _LABEL.match(line)
        if m:
            pending.append(m.group(1))
            continue
        m = _INSTRUCTION.search(line)
        if m:
            address = int(m.group(1), 16)
            for label in pending:
                current.labels[label] = address
            pending = []
            current.instructions.append((address, m.group(3), m.group(4).strip()))
    return functions


def parse_resources(text):
    """cuobjdump -res-usage output -> {function: {REG, STACK, SHARED, LOCAL}}."""
    result, name = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            name = m.group(1)
            continue
        if name and "REG:" in line:
            result[name] = {k: int(v) for k, v in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", line)}
            name = None
    return result


def disassemble(cubin: bytes):
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([_tool("nvdisasm"), "-c", f.name], capture_output=True, text=True, check=True).stdout
        res = subprocess.run([_tool("cuobjdump"), "-res-usage", f.name], capture_output=True, text=True,
                             check=True).stdout
    return parse_sass(sass), parse_resources(res)


def _access_width(opcode):
    """Bits moved by one LDG/STG (default 32)."""
    for width in ("128", "64", "U16", "S16", "16", "U8", "S8"):
        if f".{width}" in opcode:
            return {"U16": 16, "S16": 16, "U8": 8, "S8": 8}.get(width, int(width) if width.isdigit() else 32)
    return 32


def global_accesses(instructions):
    """{"load": [bits...], "store": [bits...]} of global memory instructions."""
    out = {"load": [], "store": []}
    for _, opcode, _ in instructions:
        if opcode.startswith("LDG"):
            out["load"].append(_access_width(opcode))
        elif opcode.startswith("STG"):
            out["store"].append(_access_width(opcode))
    return out


def hot_path(sass: Sass):
    """The innermost loop that loads from global memory (the hot loop), or, in straight-line kernels, the
    whole function: the instructions a thread issues per pass over its elements."""
    loading = [(s, e) for s, e in sass.loops() if any(op.startswith("LDG") for _, op, _ in sass.between(s, e))]
    innermost = [(s, e) for s, e in loading if not any((s, e) != (s2, e2) and s <= s2 and e2 <= e
                                                       for s2, e2 in loading)]
    if innermost:  # of several (a pack loop and a one-element loop), the one moving the most bytes
        start, end = max(innermost, key=lambda r: sum(global_accesses(sass.between(*r))["load"]))
        return "loop", sass.between(start, end)
    return "kernel", [i for i in sass.instructions if not i[1].startswith("NOP")]


def count_issued(instructions):
    # The final `BRA` to itself after EXIT is padding; NOPs are alignment.
    return sum(1 for _, op, _ in instructions if not op.startswith("NOP"))
