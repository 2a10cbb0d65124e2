"""Triton implementations of the Swish-family kernels.

Importing this package imports Triton; swishkernels only does so when the `triton` backend is first
needed, so the package works without Triton installed. On a CPU, the kernels run under Triton's
interpreter, which must be switched on (TRITON_INTERPRET=1) before this package is first imported.
"""
