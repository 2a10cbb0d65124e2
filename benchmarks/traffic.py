"""Minimum memory traffic of an elementwise activation, and the achieved bandwidth it implies.

An elementwise kernel cannot move fewer bytes than it reads and writes once each (ARCHITECTURE.md, "Measuring"):
  forward        reads x, writes y            2N elements
  backward       reads x and dy, writes dx    3N
  forward+back   both of the above            5N
  copy           reads x, writes y            2N   (y.copy_(x): the ceiling every kernel is compared with)
GB/s here is that minimum divided by the measured time, so an implementation that moves more (the naive
`x * sigmoid(x)` writes and rereads sigmoid(x)) shows up as a lower GB/s for the same work.
"""

MODES = ("fwd", "bwd", "fwdbwd")
TRAFFIC_ELEMENTS = {"fwd": 2, "bwd": 3, "fwdbwd": 5, "copy": 2}


def traffic_bytes(mode, numel, element_size):
    return TRAFFIC_ELEMENTS[mode] * numel * element_size


def gbps(mode, numel, element_size, seconds):
    """Achieved GB/s (10^9 bytes per second) for the minimum traffic of `mode`."""
    if not seconds or seconds <= 0:
        return float("nan")
    return traffic_bytes(mode, numel, element_size) / seconds / 1e9


def fraction_of_copy(achieved_gbps, copy_gbps):
    """Achieved bandwidth as a fraction of the copy ceiling measured in the same run (1.0 = as fast as copy)."""
    if not copy_gbps or copy_gbps != copy_gbps:
        return float("nan")
    return achieved_gbps / copy_gbps
