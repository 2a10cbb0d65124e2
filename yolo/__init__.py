"""The bundled YOLOv3 trainer that measures swishkernels end to end.

Data flows one way: cfg -> model (`yolo.models`); dataset -> loader -> train step -> loss (`yolo.loss`);
model -> predictions -> NMS (`yolo.boxes`) -> COCO json -> pycocotools -> metrics (`yolo.evaluate`).
Run `python -m yolo.train --help` to train.
"""
