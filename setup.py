"""Builds the compiled ops swishkernels._C; everything else is declared in pyproject.toml.

    pip install --no-build-isolation -e .

builds the CPU kernels always, and the CUDA kernels when torch has CUDA and nvcc is found.

Environment:
    SWISHKERNELS_SKIP_EXT=1     install the pure-Python package only (no cpu/cuda backends)
    SWISHKERNELS_FORCE_CUDA=1   build the CUDA kernels even where those checks fail
    TORCH_CUDA_ARCH_LIST        CUDA architectures to compile for (default "8.0;9.0+PTX")
"""
import os
import platform
import shutil

from setuptools import setup

CSRC = "csrc"
# Compiled once more per x86-64 instruction set, with the flags ATen uses for its own kernels.
VEC_KERNELS = [os.path.join(CSRC, "cpu", "vec_kernels.cpp"),
               os.path.join(CSRC, "cpu", "bn_vec_kernels.cpp")]
X86_CAPABILITIES = {
    "AVX2": ["-mavx2", "-mfma", "-mf16c"],
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"],
}


def build_x86_copies():
    return platform.machine().lower() in ("x86_64", "amd64") and os.name == "posix"


def want_cuda(torch, cuda_home):
    if os.environ.get("SWISHKERNELS_FORCE_CUDA") == "1":
        return True
    return torch.backends.cuda.is_built() and cuda_home is not None and os.path.exists(
        os.path.join(cuda_home, "bin", "nvcc"))


def cuda_home_with_headers():
    """The CUDA folder to build against, where torch's own guess would lack the headers; else None.

    Without CUDA_HOME/CUDA_PATH, torch takes the folder above the `nvcc` on PATH. Where that nvcc is a
    wrapper script (seen: /usr/local/bin/nvcc running /usr/local/cuda-13.0/bin/nvcc), the guess is
    /usr/local, which has no cuda_runtime.h, and the CUDA build fails on its first include.
    """
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return None
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None

    def complete(home):
        return (os.path.exists(os.path.join(home, "include", "cuda_runtime.h"))
                and os.path.exists(os.path.join(home, "bin", "nvcc")))

    if complete(os.path.dirname(os.path.dirname(nvcc))):
        return None
    for home in (os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "/usr/local/cuda"):
        if complete(home):
            return home
    return None


def extension_and_cmdclass():
    cuda_home = cuda_home_with_headers()
    if cuda_home:  # before torch.utils.cpp_extension is imported: it reads CUDA_HOME once
        os.environ["CUDA_HOME"] = cuda_home
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    class BuildWithIsaCopies(BuildExtension):
        """Adds the AVX2/AVX512 copies of the CPU kernels (csrc/cpu/vec_kernels.h says why).

        A copy defines functions in its own namespace only and no inline code shared with other
        objects (vec_kernels.cpp and bn_vec_kernels.cpp have no error paths), so the linker cannot
        hand an AVX-compiled copy of a shared function to code that runs on every CPU.
        """

        def build_extension(self, ext):
            if build_x86_copies():
                args = ext.extra_compile_args
                cxx_flags = list(args["cxx"] if isinstance(args, dict) else args)
                for capability, isa_flags in X86_CAPABILITIES.items():
                    ext.extra_objects += self.compiler.compile(
                        VEC_KERNELS,
                        output_dir=os.path.join(self.build_temp, capability.lower()),
                        macros=ext.define_macros,
                        include_dirs=ext.include_dirs,
                        extra_postargs=cxx_flags + isa_flags + [
                            f"-DCPU_CAPABILITY={capability}", f"-DCPU_CAPABILITY_{capability}"],
                        depends=ext.depends,
                    )
            super().build_extension(ext)

    sources = [
        os.path.join(CSRC, "module.cpp"),
        os.path.join(CSRC, "ops.cpp"),
        os.path.join(CSRC, "autograd.cpp"),
        os.path.join(CSRC, "cpu", "device_kernels.cpp"),
        os.path.join(CSRC, "bn_swish_ops.cpp"),
        os.path.join(CSRC, "bn_swish_layer.cpp"),
        os.path.join(CSRC, "bn_swish_autograd.cpp"),
        os.path.join(CSRC, "cpu", "bn_swish.cpp"),
        *VEC_KERNELS,  # the DEFAULT copies
    ]
    macros = [("SWISHKERNELS_X86_KERNELS", None)] if build_x86_copies() else []
    # The C++ standard is the one torch appends (its headers need it); ATen's vec headers use
    # `#pragma unroll`, which g++ reports under -Wall.
    cxx = ["-O3", "-Wno-unknown-pragmas"]
    if torch.backends.openmp.is_available() and platform.system() == "Linux":
        # With ATen's OpenMP backend, at::parallel_for runs serially unless _OPENMP is defined. The
        # OpenMP runtime itself is torch's (libtorch_cpu's libgomp), so nothing extra is linked.
        # (Apple's clang has no -fopenmp: there the kernels run on one thread.)
        cxx.append("-fopenmp")
    common = dict(name="swishkernels._C", include_dirs=[os.path.abspath(CSRC)])
    if want_cuda(torch, CUDA_HOME):
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")  # PTX: newer GPUs JIT it
        sources += [os.path.join(CSRC, "cuda", "activations.cu"),
                    os.path.join(CSRC, "cuda", "device_kernels.cpp")]
        macros.append(("SWISHKERNELS_WITH_CUDA", None))
        ext = CUDAExtension(sources=sources, define_macros=macros,
                            extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]}, **common)
    else:
        ext = CppExtension(sources=sources, define_macros=macros, extra_compile_args=cxx, **common)
    return [ext], {"build_ext": BuildWithIsaCopies}


if os.environ.get("SWISHKERNELS_SKIP_EXT") == "1":
    setup()
else:
    ext_modules, cmdclass = extension_and_cmdclass()
    setup(ext_modules=ext_modules, cmdclass=cmdclass)
