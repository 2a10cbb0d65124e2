"""The machines and the issue budget: how many SASS instructions per element a kernel can issue before issue, not
HBM bandwidth, bounds it, and how many programs its registers let an SM keep resident."""
import dataclasses

#
# An SM issues at most one warp instruction per clock from each of its 4 schedulers (sm_80 and sm_90), i.e.
# 4 * 32 = 128 thread instructions per clock. A kernel moving B bytes of HBM traffic per element at a
# fraction f of the bandwidth BW handles f * BW / B elements per second, so it can afford
#     I_max = (SMs * clock * 128) / (f * BW / B)        thread instructions per element
# before issue, not memory, is the bound. H200: 132 SMs, 1.98 GHz boost, 4.8 TB/s:
#     I_max = 132 * 1.98e9 * 128 / (0.9 * 4.8e12 / B) = 7.74 * B
# and the budget asserted is half of that, 3.87 * B (other instructions of a program, latency, and the fact
# that dual-issue does not exist leave the other half): 15.5 for fp16 Swish forward (B = 4), 31 for fp32.
# H100 SXM (3.35 TB/s) allows more per element; H200 is the binding case.


@dataclasses.dataclass(frozen=True)
class Machine:
    name: str
    sms: int
    clock_ghz: float
    hbm_tb_s: float


H100 = Machine("H100 SXM", 132, 1.98, 3.35)
H200 = Machine("H200", 132, 1.98, 4.8)
THREAD_ISSUE_PER_SM_CLOCK = 4 * 32
BANDWIDTH_FRACTION = 0.9
BUDGET_SHARE = 0.5


def max_instructions_per_element(bytes_per_element: float, machine: Machine = H200) -> float:
    """I_max above: thread instructions per element at which issue and 90% of HBM bandwidth take equal time."""
    issue_per_s = machine.sms * machine.clock_ghz * 1e9 * THREAD_ISSUE_PER_SM_CLOCK
    elements_per_s = BANDWIDTH_FRACTION * machine.hbm_tb_s * 1e12 / bytes_per_element
    return issue_per_s / elements_per_s


def instruction_budget(bytes_per_element: float) -> float:
    return BUDGET_SHARE * max_instructions_per_element(bytes_per_element, H200)


# Register file and limits per SM (sm_80 and sm_90 alike for what matters here).
REGISTERS_PER_SM = 65536
MAX_WARPS_PER_SM = {80: 64, 90: 64}
MAX_PROGRAMS_PER_SM = 32
SHARED_PER_SM = {80: 164 * 1024, 90: 228 * 1024}
MIN_PROGRAMS_PER_SM = {"elementwise": 4, "reduction": 2, "finish": 2}


def resident_programs(registers: int, warps: int, shared: int, arch: int) -> int:
    per_warp = -(-registers * 32 // 256) * 256  # registers are allocated per warp in units of 256
    by_registers = (REGISTERS_PER_SM // per_warp) // warps if per_warp else MAX_PROGRAMS_PER_SM
    by_warps = MAX_WARPS_PER_SM[arch] // warps
    by_shared = SHARED_PER_SM[arch] // (shared + 1024) if shared else MAX_PROGRAMS_PER_SM  # 1 KiB reserved
    return min(by_registers, by_warps, by_shared, MAX_PROGRAMS_PER_SM)
