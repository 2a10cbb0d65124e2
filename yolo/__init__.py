"""The bundled YOLOv3 trainer that measures swishkernels end to end.

Data flows one way: cfg -> model (`yolo.models`); dataset -> loader -> train step -> loss (`yolo.loss`);
model -> predictions -> NMS (`yolo.boxes`) -> COCO json -> pycocotools -> metrics (`yolo.evaluate`).
Weights files in and out: `yolo.weights` (trainer .pt, state_dicts) and `yolo.darknet_weights` (.weights).
Commands: `python -m yolo.train` (train, --resume, --weights), `python -m yolo.val` (score a checkpoint),
`python -m yolo.detect` (boxes on images), `python -m yolo.weights` (convert .pt <-> Darknet .weights),
`python -m yolo.experiment` (one run per variant: activations, the seed thread's knobs). Each takes --help.
"""
