"""What our Triton launchers launch, recorded instead of run: per kernel, its family and the tensors it moves per
element, and the exact arguments (grid, constexprs, num_warps) each launcher passes for each dtype and case."""

# ---- what each kernel moves per element ----------------------------------------------------------------------

# kernel label -> (family, tensors read per element, tensors written per element). The BatchNorm kernels that
# take the activation as the ACT constexpr (bn_act_*) are labelled per activation: bn_swish_*, bn_mish_*.
KERNELS = {
    "swish_forward_kernel": ("elementwise", 1, 1),
    "mish_forward_kernel": ("elementwise", 1, 1),
    "swish_backward_kernel": ("elementwise", 2, 1),
    "mish_backward_kernel": ("elementwise", 2, 1),
    "bn_stats_kernel": ("reduction", 1, 0),
    "bn_swish_backward_reduce_kernel": ("reduction", 2, 0),
    "bn_swish_forward_kernel": ("elementwise", 1, 1),
    "bn_swish_backward_input_kernel": ("elementwise", 2, 1),
    "bn_mish_backward_reduce_kernel": ("reduction", 2, 0),
    "bn_mish_forward_kernel": ("elementwise", 1, 1),
    "bn_mish_backward_input_kernel": ("elementwise", 2, 1),
    "bn_finish_stats_kernel": ("finish", 0, 0),
    "bn_finish_backward_kernel": ("finish", 0, 0),
}


_ACT_NAMES = ("swish", "mish")  # swishkernels.triton.kernels.SWISH, MISH


def kernel_label(fn_name, kwargs):
    """The kernel's name, with an ACT-parametrised BatchNorm kernel's activation in place of `act`."""
    if fn_name.startswith("bn_act_"):
        return fn_name.replace("bn_act_", f"bn_{_ACT_NAMES[kwargs['ACT']]}_", 1)
    return fn_name


def elements_per_thread(kwargs):
    """Elements one thread handles per pass (hot-loop iteration or program): tile size / threads."""
    tile = kwargs.get("BLOCK") or kwargs["BLOCK_R"] * kwargs["BLOCK_K"]
    return tile / (32 * kwargs.get("num_warps", 4))


# ---- recording what the launchers launch ---------------------------------------------------------------------

def _record_launches(call):
    """Runs call() with every JITFunction launch recorded instead of run: [(fn, grid, args, kwargs)]."""
    from triton.runtime.jit import JITFunction
    records = []
    original = JITFunction.run

    def record(self, *args, grid, warmup, **kwargs):
        records.append((self, grid, args, kwargs))

    JITFunction.run = record
    try:
        call()
    finally:
        JITFunction.run = original
    return records


DTYPES = ("float16", "bfloat16", "float32", "float64")
ELEMENTWISE_NUMEL = {"aligned": 1 << 20, "odd": (1 << 20) + 3, "unaligned": (1 << 20) + 3}
BN_SHAPES = {"aligned": ((16, 64, 52, 52), False), "odd": ((16, 256, 13, 13), False),
             "channels_last": ((16, 64, 52, 52), True)}


def _tensor(shape, dtype, offset=0, channels_last=False):
    import torch
    n = 1
    for s in shape:
        n *= s
    t = torch.empty(n + offset, dtype=getattr(torch, dtype))[offset:]  # offset 1 element: not 16-byte aligned
    t = t.view(shape) if not channels_last else t.view(shape[0], shape[2], shape[3], shape[1]).permute(0, 3, 1, 2)
    return t


def launches(group, dtype, case):
    """(label, record) of every kernel our launchers start for one group (a launcher module's entry points)."""
    import torch

    from swishkernels.triton import launch
    calls = []
    if group == "elementwise":
        numel = ELEMENTWISE_NUMEL[case]
        offset = 1 if case == "unaligned" else 0
        x, dy, out = (_tensor((numel,), dtype, offset) for _ in range(3))
        for act in ("swish", "mish"):
            calls.append(lambda act=act: launch.forward(act, x, out))
            calls.append(lambda act=act: launch.backward(act, dy, x, out))
    else:
        from swishkernels.triton import bn_launch
        shape, cl = BN_SHAPES[case]
        x, dy, out = (_tensor(shape, dtype, channels_last=cl) for _ in range(3))
        acc = torch.float64 if dtype == "float64" else torch.float32
        c = shape[1]
        pc = [torch.rand(c, dtype=acc) for _ in range(6)]
        running = [torch.zeros(c), torch.ones(c)]
        counter = torch.zeros((), dtype=torch.long)
        calls.append(lambda: bn_launch.finish_stats(x, pc[0], pc[1], *running, counter, 0.1, 1e-5, True))
        for act in _ACT_NAMES:  # finish_backward: its reduction kernel, then the finishing one (shared)
            calls += [lambda act=act: bn_launch.finish_backward(dy, x, *pc[:4], True, torch.float32, act),
                      lambda act=act: bn_launch.forward(x, pc[0], pc[1], out, act),
                      lambda act=act: bn_launch.backward_input(dy, x, *pc[:5], out, act)]
    records = []
    for call in calls:
        records += _record_launches(call)
    return records
