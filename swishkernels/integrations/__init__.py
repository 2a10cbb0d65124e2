"""Framework-specific code, one module per framework, each imported only when used: `fuse_bn_swish` loads
one when the model holds that framework's modules (the framework is then already imported by the user).

Each module provides `norm_act_verdict(module)` (for norm layers that apply an activation themselves) and
`after_fuse(model)`; ultralytics.py also has the one-line trainer integration `apply_swishkernels`.
"""
