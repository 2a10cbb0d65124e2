"""python -m tools.gpu_code"""
import sys

from .cli import main

sys.exit(main())
