"""`python -m yolo.experiment`: the seed thread's comparison, one trained model per variant (see cli.py).

One module per job: variants.py (names -> trainer options), runs.py (one row, its resume markers),
progress.py (i/N, ETA), memory.py (the saved-for-backward column), summary.py (the tables), plots.py (the
figure), cli.py (options and the loop over rows).
"""
from .cli import DEFAULTS, PROG, main, parse_args
from .plots import same_curve_labels
from .progress import Progress, fmt_duration
from .runs import finished_run, read_curves, resumable_row, row_identity, run_options
from .summary import METRICS, add_ratios
from .variants import BASELINE, GROUPS, SEED_ROWS, Variant, parse_variants, variant

__all__ = ["BASELINE", "DEFAULTS", "GROUPS", "METRICS", "PROG", "SEED_ROWS", "Progress", "Variant", "add_ratios",
           "finished_run", "fmt_duration", "main", "parse_args", "parse_variants", "read_curves", "resumable_row",
           "row_identity", "run_options", "same_curve_labels", "variant"]
