"""Run folders: runs/train/exp, then exp2, exp3, ... so no run overwrites another."""
import re
from pathlib import Path


def increment_path(path, exist_ok=False):
    """`path` if it is free (or exist_ok), else the first free path{2,3,...}. Creates nothing."""
    path = Path(path)
    if exist_ok or not path.exists():
        return path
    pattern = re.compile(rf"^{re.escape(path.name)}(\d+)$")
    taken = [int(m.group(1)) for p in path.parent.glob(f"{path.name}*") if (m := pattern.match(p.name))]
    return path.with_name(f"{path.name}{max(taken, default=1) + 1}")


def claim_run_dir(path, exist_ok=False, attempts=1000):
    """Choose and create the run folder in one step: the exclusive mkdir fails if another run created the
    chosen name since it was chosen, and then the next free name is tried. Returns the created folder."""
    for _ in range(attempts):
        candidate = increment_path(path, exist_ok=exist_ok)
        try:
            candidate.mkdir(parents=True, exist_ok=exist_ok)
            return candidate
        except FileExistsError:
            continue  # another run took it between our choice and our mkdir
    raise FileExistsError(f"could not create a run folder like {path} after {attempts} attempts")
