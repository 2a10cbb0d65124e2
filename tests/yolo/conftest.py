"""One tiny trained run shared by the val, detect and weights tests (yolov3-tiny, 1 epoch on 8 generated
64-px images, CPU: a few seconds)."""
import pytest

TINY_DATA = "shapes:n_train=8,n_val=4,img_size=64"


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    from yolo.train import run

    root = tmp_path_factory.mktemp("trained")
    result = run(data=TINY_DATA, cfg="yolov3-tiny", img_size=64, batch_size=4, device="cpu", workers=0, seed=0,
                 epochs=1, cache_dir=str(root / "cache"), project=str(root / "runs"), verbose=False)
    result["cache_dir"] = str(root / "cache")
    return result
