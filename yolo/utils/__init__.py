"""Training support for the bundled YOLOv3 trainer: devices and seeds, EMA, checkpoints, DDP, results, plots."""
