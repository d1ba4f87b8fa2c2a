"""Weakly-supervised object localization (paper section 4.3, Table 4, Figure 6).

CAM (Zhou et al.): the class activation map of one class, `[B, h, w]` from `cam_fn`'s
`[B, h, w, K]`, is upsampled bilinearly to the input size `[B, H, W]`, min-max normalized per
image, binarized at `threshold` (paper: 0.15; pixels >= threshold) and boxed: the box of the
largest 8-connected component. Boxes are `(ymin, xmin, ymax, xmax)` in [0, 1] image
coordinates, a pixel row i spanning [i / H, (i + 1) / H], the same convention as the
dataset's `bbox`.

Top-1 localization: the predicted class is right and the IoU of its CAM box with the true
box is >= 0.5. GT-known: the IoU of the true class's CAM box with the true box is >= 0.5.
CAMs run jitted over the batch on the device; connected components run on the host.
"""

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib import figure as mpl_figure
from matplotlib import patches
from scipy import ndimage

from alignmix_jax.evaluation import batches as batches_lib
from alignmix_jax.evaluation import classification


def class_cams(cams, classes, size):
  """CAMs of given classes, upsampled to `size` and min-max normalized.

  Args:
    cams: `[B, h, w, K]` class activation maps.
    classes: `[B]` int class of each example.
    size: `(H, W)` input image size.

  Returns:
    `[B, H, W]` float32 maps in [0, 1] (all 0 where a map is constant).
  """
  selected = jnp.take_along_axis(cams, classes[:, None, None, None], axis=-1)[..., 0]
  upsampled = jax.image.resize(selected.astype(jnp.float32), (cams.shape[0], *size), 'bilinear')
  low = jnp.min(upsampled, axis=(1, 2), keepdims=True)
  span = jnp.max(upsampled, axis=(1, 2), keepdims=True) - low
  return (upsampled - low) / jnp.where(span > 0, span, 1.0)


def box_from_cam(cams, threshold=0.15):
  """Box of the largest connected component of each thresholded map.

  Args:
    cams: `[B, H, W]` normalized maps (any real values; a 0/1 mask works with 0.5).
    threshold: pixels with value >= threshold are foreground.

  Returns:
    `[B, 4]` float32 `(ymin, xmin, ymax, xmax)` in [0, 1]; all zeros where a map has no
    foreground. Ties between equally large components go to the first in raster order.
  """
  cams = np.asarray(cams)
  if cams.ndim != 3:
    raise ValueError(f'box_from_cam takes maps [B, H, W]; got shape {cams.shape} (add a '
                     'leading batch axis for a single map).')
  batch, height, width = cams.shape
  # 8-connectivity within each image, none across the batch axis.
  structure = np.zeros((3, 3, 3), bool)
  structure[1] = True
  labels, num_components = ndimage.label(cams >= threshold, structure=structure)
  boxes = np.zeros((batch, 4), np.float32)
  if num_components == 0:
    return boxes
  sizes = np.bincount(labels.ravel(), minlength=num_components + 1)[1:]
  slices = ndimage.find_objects(labels)
  image = np.array([s[0].start for s in slices])
  # Components sorted by image, then by size (largest first), then by label.
  order = np.lexsort((-sizes, image))
  first = order[np.r_[True, np.diff(image[order]) > 0]]
  for component in first:
    _, rows, cols = slices[component]
    boxes[image[component]] = (rows.start / height, cols.start / width,
                               rows.stop / height, cols.stop / width)
  return boxes


def _sides(top_left, bottom_right):
  """Height and width `[..., 2]` of boxes given by corners, 0 where they cross."""
  return np.clip(bottom_right - top_left, 0, None)


def iou(boxes_a, boxes_b):
  """Intersection over union of `[..., 4]` `(ymin, xmin, ymax, xmax)` boxes, shape `[...]`.

  A pair whose union is empty (two zero-area boxes) has IoU 0.
  """
  boxes_a, boxes_b = np.asarray(boxes_a, np.float64), np.asarray(boxes_b, np.float64)
  inter = np.prod(_sides(np.maximum(boxes_a[..., :2], boxes_b[..., :2]),
                         np.minimum(boxes_a[..., 2:], boxes_b[..., 2:])), axis=-1)
  union = (np.prod(_sides(boxes_a[..., :2], boxes_a[..., 2:]), axis=-1)
           + np.prod(_sides(boxes_b[..., :2], boxes_b[..., 2:]), axis=-1) - inter)
  return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def examples_figure(images, cams, pred_boxes, true_boxes, path):
  """Saves images with their CAM, predicted (red) and true (green) boxes as a PNG (Figure 6).

  Args:
    images: `[N, H, W, 3]` in [0, 1].
    cams: `[N, H, W]` normalized CAMs of the predicted class.
    pred_boxes, true_boxes: `[N, 4]` boxes in [0, 1].
    path: where to write the PNG.
  """
  count = len(images)
  fig = mpl_figure.Figure(figsize=(2.2 * count, 2.5), dpi=100)
  axes = np.atleast_1d(fig.subplots(1, count))
  overlaps = iou(pred_boxes, true_boxes)
  for ax, image, cam, boxes, overlap in zip(axes, images, cams, zip(pred_boxes, true_boxes),
                                             overlaps):
    ax.imshow(image, extent=(0, 1, 1, 0))
    ax.imshow(cam, cmap='jet', alpha=0.35, extent=(0, 1, 1, 0))
    for (ymin, xmin, ymax, xmax), color in zip(boxes, ('red', 'lime')):
      ax.add_patch(patches.Rectangle((xmin, ymin), xmax - xmin, ymax - ymin, fill=False,
                                     edgecolor=color, linewidth=2))
    ax.set_title(f'IoU = {overlap:.2f}', fontsize=9)
    ax.axis('off')
  fig.savefig(path, bbox_inches='tight')


def evaluate(logits_fn, cam_fn, batches, *, threshold, figure_path, iou_threshold=0.5,
             num_examples=8):
  """Top-1 localization and GT-known accuracy in percent; saves example boxes.

  Args:
    logits_fn: `images [B, H, W, 3] in [0, 1] -> logits [B, K]` (BatchNorm in eval mode).
    cam_fn: `images -> [B, h, w, K]` class activation maps.
    batches: iterable of batch dicts (`image`, `label`, `mask`, `bbox`).
    threshold: CAM binarization threshold (paper: 0.15).
    figure_path: where to write the PNG of examples (from the first batch).
    iou_threshold: IoU that counts as a correct box (paper: 0.5).
    num_examples: how many examples the figure shows.

  Returns:
    `{'loc/top1': percent, 'loc/gt_known': percent}`.
  """

  @jax.jit
  def step(batch):
    images, labels = batch['image'], batch['label']
    logits = logits_fn(images)
    predicted = jnp.argmax(logits, axis=-1)  # The top-1 class of `top_k_wrong` (ties: lowest).
    cams = cam_fn(images)
    size = images.shape[1:3]
    return {'correct': classification.top_k_wrong(logits, labels) == 0,
            'cam_pred': class_cams(cams, predicted, size),
            'cam_true': class_cams(cams, labels, size)}

  top1 = gt_known = count = 0
  for batch in batches:
    if 'bbox' not in batch:
      raise ValueError('Localization needs true boxes: set config.dataset.with_bbox = True on a '
                       'dataset with boxes (caltech_birds2011).')
    out = jax.device_get(step({k: batch[k] for k in ('image', 'label')}))
    keep = np.asarray(batch['mask']) > 0
    pred_boxes = box_from_cam(out['cam_pred'], threshold)
    pred_hit = iou(pred_boxes, batch['bbox']) >= iou_threshold
    true_hit = iou(box_from_cam(out['cam_true'], threshold), batch['bbox']) >= iou_threshold
    top1 += int(np.sum(keep & out['correct'] & pred_hit))
    gt_known += int(np.sum(keep & true_hit))
    if count == 0 and keep.any():
      shown = np.flatnonzero(keep)[:num_examples]
      examples_figure(np.asarray(batch['image'])[shown], out['cam_pred'][shown],
                      pred_boxes[shown], np.asarray(batch['bbox'])[shown], figure_path)
    count += int(np.sum(keep))
  batches_lib.require_examples(count)
  return {'loc/top1': 100.0 * top1 / count, 'loc/gt_known': 100.0 * gt_known / count}
