"""A real ultralytics training run (YOLO("yolov8n.yaml").train), offline on CPU, on a YOLO-format dataset
made here, with swishkernels' one-line integration: the trainer's own model is fused (after it rebuilt it
from the yaml and built its optimizer), BatchNorm weights train, losses match the unfused run, and
autograd keeps less."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from ultralytics import YOLO

from swishkernels import bn_swish
from swishkernels.integrations.ultralytics import apply_swishkernels

IMAGES = 4
SIZE = 64


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Four 64 px images, each with one coloured box and its YOLO-txt label; train and val are the same."""
    root = tmp_path_factory.mktemp("boxes")
    generator = torch.Generator().manual_seed(0)
    for folder in ("images/train", "labels/train"):
        (root / folder).mkdir(parents=True)
    for i in range(IMAGES):
        x0, y0, w, h = (int(v) for v in torch.randint(8, 28, (4,), generator=generator))
        image = torch.full((SIZE, SIZE, 3), 114, dtype=torch.uint8)
        image[y0:y0 + h, x0:x0 + w] = torch.randint(0, 255, (3,), generator=generator, dtype=torch.uint8)
        Image.fromarray(image.numpy()).save(root / "images/train" / f"{i}.png")
        (root / "labels/train" / f"{i}.txt").write_text(
            f"0 {(x0 + w / 2) / SIZE:.6f} {(y0 + h / 2) / SIZE:.6f} {w / SIZE:.6f} {h / SIZE:.6f}\n")
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/train\nnames:\n  0: box\n")
    return root


@pytest.fixture
def torch_state_restored():
    """ultralytics' `deterministic=True` switches on deterministic algorithms, switches off their NaN fill of new
    tensors (which other tests rely on) and resets the thread count; a trainer that is built but never trains
    does not switch them back."""
    deterministic, warn_only = torch.are_deterministic_algorithms_enabled(), \
        torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    threads = torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.utils.deterministic.fill_uninitialized_memory = fill
    torch.set_num_threads(threads)


class Observer:
    """Callbacks that watch a training run: per-batch losses, BatchNorm weights before and after, whether
    the optimizer holds every parameter, and the bytes autograd saves in the first training forward."""

    def __init__(self):
        self.losses, self.saved_bytes, self.report = [], None, None

    def attach(self, yolo):
        yolo.add_callback("on_pretrain_routine_end", self.start)
        yolo.add_callback("on_train_batch_end", self.batch_end)
        yolo.add_callback("on_train_end", self.end)

    def start(self, trainer):
        model = trainer.model
        self.report = getattr(trainer, "_swishkernels_report", None)
        self.bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        self.bn_types = {type(m).__name__ for m in self.bn}
        self.weights_before = [m.weight.detach().clone() for m in self.bn]
        optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
        self.all_in_optimizer = all(id(p) in optimized for p in model.parameters() if p.requires_grad)
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        storages = {}

        def pack(tensor):  # recompute mode's recipes are kept as recipes, and count as what they keep
            packed = bn_swish.pack_saved_tensor(tensor)
            if isinstance(packed, torch.Tensor) and packed.untyped_storage().data_ptr() not in params:
                storages[packed.untyped_storage().data_ptr()] = packed.untyped_storage().nbytes()
            return packed

        hooks = torch.autograd.graph.saved_tensors_hooks(pack, bn_swish.unpack_saved_tensor)

        def enter(module, args):
            hooks.__enter__()

        def leave(module, args, output):
            hooks.__exit__(None, None, None)
            self.saved_bytes = sum(storages.values())
            for handle in self.handles:
                handle.remove()

        self.handles = [model.register_forward_pre_hook(enter), model.register_forward_hook(leave)]

    def batch_end(self, trainer):
        items = trainer.loss_items  # {"box_loss": ..., "cls_loss": ..., "dfl_loss": ...}
        self.losses.append(torch.tensor([float(items[k]) for k in sorted(items)]))

    def end(self, trainer):
        self.weights_after = [m.weight.detach().clone() for m in self.bn]


def train(dataset, tmp_path, fused, recompute=False):
    yolo = YOLO("yolov8n.yaml")
    if fused:
        apply_swishkernels(yolo, recompute=recompute)  # the one line
    observer = Observer()
    observer.attach(yolo)
    yolo.train(data=str(dataset / "data.yaml"), epochs=1, imgsz=SIZE, batch=2, workers=0, device="cpu",
               amp=False, seed=0, deterministic=True, plots=False, val=False, save=False, verbose=False,
               nbs=2, warmup_epochs=0, optimizer="SGD", lr0=0.01,  # a step per batch, full learning rate
               project=str(tmp_path), name=f"fused{fused}-recompute{recompute}", exist_ok=True)
    return observer


def test_ultralytics_training_fused_and_recomputed(dataset, tmp_path, torch_state_restored):
    plain = train(dataset, tmp_path, fused=False)
    fused = train(dataset, tmp_path, fused=True)
    recomputed = train(dataset, tmp_path, fused=True, recompute=True)

    assert plain.bn_types == {"BatchNorm2d"} and plain.report is None
    moved_plain = [not torch.equal(a, b) for a, b in zip(plain.weights_before, plain.weights_after)]
    assert sum(moved_plain) >= 0.9 * len(moved_plain)  # a few heads see no target in 2 batches of 2
    for run in (fused, recomputed):
        assert len(run.report.fused) == 57 and not run.report.skipped
        assert run.bn_types == {"BatchNormSwish2d"}
        assert run.all_in_optimizer
        assert [not torch.equal(a, b) for a, b in zip(run.weights_before, run.weights_after)] == moved_plain
        assert len(run.losses) == len(plain.losses) == IMAGES // 2
        # Batch 1 runs the same weights, batch 2 the weights after one SGD step. The losses differ by float32
        # rounding of the fused kernels' other summation order (seen: <= 7e-5 relative). Later batches are
        # not compared: the detection loss's top-k target assignment turns rounding into different choices.
        torch.testing.assert_close(torch.stack(run.losses), torch.stack(plain.losses), rtol=2e-4, atol=1e-9)
    assert fused.saved_bytes < 0.8 * plain.saved_bytes
    assert recomputed.saved_bytes <= 0.55 * plain.saved_bytes



HANDOFF = """
import sys
from ultralytics.utils import DEFAULT_CFG_DICT
from ultralytics.utils.patches import torch_load
state = torch_load(sys.argv[1], map_location="cpu")  # what ultralytics' DDP file does in every process
cfg = DEFAULT_CFG_DICT.copy()
cfg.update(save_dir="")
trainer = state["trainer"](cfg=cfg, overrides=state["args"], _callbacks=state["callbacks"])
trainer.model = state["model"]
trainer.run_callbacks("on_pretrain_routine_end")  # the event apply_swishkernels fuses at
types = {type(m).__name__ for m in trainer.model.modules() if type(m).__name__.startswith("BatchNorm")}
print(len(trainer._swishkernels_report.fused), sorted(types), hasattr(trainer, "_swishkernels_recompute"))
"""


def test_apply_swishkernels_survives_the_ddp_handoff(dataset, tmp_path, monkeypatch, torch_state_restored):
    """ultralytics trains on several GPUs by pickling the trainer's class, arguments, model and callbacks
    (cloudpickle) into a file that each torchrun process loads. No GPU here, so the hand-off itself is tested:
    the file ultralytics writes, loaded in a fresh process, fuses the model at the same event."""
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.utils import dist

    monkeypatch.setattr(dist, "USER_CONFIG_DIR", tmp_path)
    yolo = apply_swishkernels(YOLO("yolov8n.yaml"), recompute=True)
    trainer = DetectionTrainer(overrides=dict(model="yolov8n.yaml", data=str(dataset / "data.yaml"), imgsz=SIZE,
                                              device="cpu", workers=0, project=str(tmp_path), name="ddp"),
                               _callbacks=yolo.callbacks)
    trainer.model = trainer.get_model(cfg="yolov8n.yaml", verbose=False)
    script = dist.generate_ddp_file(trainer)
    state_file = str(Path(script).with_suffix(".pt"))
    proc = subprocess.run([sys.executable, "-c", HANDOFF, state_file], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[-2] == "57 ['BatchNormSwish2d'] True"
