"""Progress of an experiment: which row (i/N), epoch and batch, and the ETA of this row and of all rows."""
import math
import time
from typing import Optional


def fmt_duration(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Prints which variant (i/N), which epoch and batch, and the ETA from the mean wall time per epoch
    (training plus evaluation) of the epochs finished so far in this invocation."""

    BATCH_EVERY_S = 20  # a batch line at most this often, so slow CPU epochs still show signs of life

    def __init__(self, to_train, epochs):
        self.to_train, self.epochs = to_train, epochs
        self.epoch_seconds = []
        self.index, self.name, self.t_epoch, self.t_print = 0, "", 0.0, 0.0
        self.start = time.time()

    def begin(self, index, name):
        self.index, self.name = index, name
        self.t_epoch = self.t_print = time.time()
        self.remaining_runs = self.to_train - index  # not counting this one
        self.say(f"training ({self.epochs} epochs); ETA all {fmt_duration(self.eta(self.epochs)[1])}")

    def eta(self, epochs_left_here):
        """(seconds left in this run, seconds left in all runs), None before the first epoch ends."""
        if not self.epoch_seconds:
            return None, None
        mean = sum(self.epoch_seconds) / len(self.epoch_seconds)
        return mean * epochs_left_here, mean * (epochs_left_here + self.remaining_runs * self.epochs)

    def say(self, message):
        print(f"[{self.index}/{self.to_train} {self.name}] {message}", flush=True)

    def on_train_batch_end(self, epoch, batch, loss_items):
        now = time.time()
        if now - self.t_print >= self.BATCH_EVERY_S:
            self.t_print = now
            self.say(f"epoch {epoch + 1}/{self.epochs} batch {batch + 1}, loss {float(loss_items[3]):.3g}")

    def on_epoch_end(self, epoch, row):
        now = time.time()
        self.epoch_seconds.append(now - self.t_epoch)
        self.t_epoch = self.t_print = now
        this_run, everything = self.eta(self.epochs - epoch - 1)
        loss = sum(row[f"train/{k}_loss"] for k in ("box", "obj", "cls"))
        self.say(f"epoch {epoch + 1}/{self.epochs}: train loss {loss:.4g}, mAP@0.5 {row['metrics/mAP_0.5']:.4f}, "
                 f"{self.epoch_seconds[-1]:.0f} s; ETA this run {fmt_duration(this_run)}, "
                 f"all {fmt_duration(everything)}")

    def callbacks(self):
        return {"on_train_batch_end": self.on_train_batch_end, "on_epoch_end": self.on_epoch_end}
