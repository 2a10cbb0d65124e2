"""Compiling: every recorded Triton launch compiled for sm_80/sm_90 exactly as the runtime would, read as SASS
into a Build (registers, spills, access widths, hot-loop instructions per element); the sets of builds."""
from .analysis import Build, analyse
from .cuda import cuda_builds, nvcc
from .launches import BN_SHAPES, DTYPES, ELEMENTWISE_NUMEL, KERNELS, elements_per_thread, kernel_label, launches
from .sass import disassemble

_CACHE = {}


def compile_record(record, arch):
    """cubin bytes and metadata for one recorded launch, as the runtime would compile it for `arch`."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature
    fn, _, args, kwargs = record
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kwargs = dict(kwargs, debug=False)
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    key = (fn.__name__, repr(signature), repr(sorted(constexprs.items())), repr(sorted(attrs.items())),
           repr(options), arch)
    if key not in _CACHE:
        compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target,
                                  options=options.__dict__)
        _CACHE[key] = (compiled.asm["cubin"], compiled.metadata.name, options.num_warps,
                       compiled.metadata.shared)
    return _CACHE[key]


def _padding(kernel, case, kwargs):
    """Lanes per useful element of a BatchNorm tile (rows and columns rounded up to whole blocks)."""
    if case not in BN_SHAPES or "BLOCK_K" not in kwargs:
        return 1.0
    shape, cl = BN_SHAPES[case]
    n, c, h, w = shape
    if kernel in ("bn_stats_kernel", "bn_swish_backward_reduce_kernel", "bn_mish_backward_reduce_kernel"):
        rows, cols = (n * h * w, c) if cl else (n, h * w)
    else:
        rows, cols = (n * h * w, c) if cl else (n * c, h * w)
    br, bk = kwargs["BLOCK_R"], kwargs["BLOCK_K"]
    return (-(-cols // bk) * bk / cols) * (-(-rows // br) * br / rows)


def triton_builds(group, dtype, arch, case):
    builds = []
    seen = set()
    for record in launches(group, dtype, case):
        fn, _, _, kwargs = record
        name = kernel_label(fn.__name__, kwargs)
        if name in seen:  # the finishing kernel shared by both activations' backward
            continue
        seen.add(name)
        family, reads, writes = KERNELS[name]
        cubin, symbol, warps, shared = compile_record(record, arch)
        sass, resources = disassemble(cubin)
        build = Build(name, "triton", dtype, arch, case, family, warps=warps, shared=shared)
        build.padding = _padding(name, case, kwargs)
        elements = 0 if family == "finish" else elements_per_thread(kwargs)
        analyse(build, sass[symbol], resources.get(symbol, {}), elements, reads, writes)
        builds.append(build)
    return builds


def full_matrix():
    """(group, dtype, arch, case) of every Triton build, and the CUDA archs."""
    triton_sets = [(g, d, a, c) for g, cases in (("elementwise", ELEMENTWISE_NUMEL), ("bn", BN_SHAPES))
                   for c in cases for d in DTYPES for a in (80, 90)]
    return triton_sets, (80, 90)


def representative():
    """What `make test` compiles (~2 minutes on a 2-core machine): sm_90 for the dtypes that bind (fp16 has
    the smallest budget per element, fp32 the most registers per element of bf16/fp16's math), fp64 where
    registers ran out, every case, and one sm_80 sample per group."""
    triton_sets = [(g, d, 90, c) for g, cases in (("elementwise", ("aligned", "odd")), ("bn", BN_SHAPES))
                   for c in cases for d in ("float16", "float32")]
    triton_sets += [("bn", "float64", 90, "odd"), ("elementwise", "bfloat16", 90, "odd"),
                    ("elementwise", "float16", 80, "aligned"), ("bn", "float16", 80, "odd")]
    return triton_sets, (90,)


def collect(selection):
    triton_sets, cuda_archs = selection
    builds = []
    for group, dtype, arch, case in triton_sets:
        builds += triton_builds(group, dtype, arch, case)
    if nvcc():
        for arch in cuda_archs:
            builds += cuda_builds(arch)
    return builds
