"""Evaluation programs of the paper (sections 4.1-4.3), one module each.

  classification: top-k error (Table 1).
  attacks:        top-1 error under FGSM and PGD, `fgsm`, `pgd` (Table 2).
  calibration:    `ece`, the reliability diagram (Table 3 right, Figure 5).
  ood:            max-softmax OOD detection, `detection_metrics` (Tables 3 left, 7).
  localization:   CAM boxes, `box_from_cam`, `iou` (Table 4, Figure 6).
  runner:         `evaluate(config, workdir)`, what `--mode eval` runs (`cli`).

Each program takes `logits_fn(images) -> logits` (and `cam_fn`), never the model class, and
runs one jitted step per batch. None imports TensorFlow.
"""

PROGRAMS = ('classification', 'attacks', 'calibration', 'ood', 'localization')
