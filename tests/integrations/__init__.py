"""Tests against the real frameworks (ultralytics, timm, torchvision), which CI installs.

Importing ultralytics replaces PIL.Image.open process-wide (to install pi-heif, from the network, the first
time Pillow cannot identify a file). That would change the errors that tests/yolo expects from Pillow, since
all tests share one process, so Pillow's own function is put back right away. Nothing here opens HEIF files.
"""
import os

os.environ.setdefault("YOLO_OFFLINE", "1")  # ultralytics must not try the network

from PIL import Image  # noqa: E402

_pillow_open = Image.open
import ultralytics  # noqa: E402,F401

Image.open = _pillow_open
