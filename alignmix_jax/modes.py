"""The mixup modes of a mini-batch and the methods that draw among them.

The network runs once per step, x -E-> A -e-> z -g-> logits (and z -D-> x_hat), and a mode
says what happens at each mixing point on the way (paper (3)-(7), Algorithm 1):

  mode               stage k of E (0 = x)      A                 z            targets
  clean              -                         -                 -            y; + recon. (1)
  input              mixup at 0 (4)            -                 -            mix(y, y')
  latent             -                         -                 mixup (6)    mix(y, y')
  feature            -                         align A' onto A,  -            mix(y, y')
                                               mix(A, A~) (13)
  feature_reversed   -                         align A onto A',  -            mix(y, y')
                                               mix(A~', A') (14)
  layer<k>           mixup after stage k       -                 -            mix(y, y')
  cutmix             box of x' pasted in x     -                 -            lam from box
  puzzlemix          PuzzleMix of x and x' at  -                 -            mask mean per
                     0 (`puzzlemix`)                                          image
  comixup            Co-Mixup of groups of x   -                 -            mask-weighted
                     at 0 (`comixup`)                                         mean

Both feature modes solve one plan of M(A, A') (`alignment`) and use it one way or the other
(`Mode.reverse`, looked up on the device: the step holds one Sinkhorn loop for both); (14)
is written as the authors' code computes it, lam weighing what comes from x
(`mixup.aligned_feature_mix`).
With `align=False` both feature modes mix A without aligning it (and are then the same);
with `align_latent=True` a tensor Z is aligned (13) before it is mixed. Only clean steps get
the reconstruction (and KL) loss; mixed ones get cross-entropy against the mixed targets
only (7).

A method (`methods`) is a table of (mode, probability). The train step draws a mode index on
the device and, at each mixing point, `lax.switch`es among the distinct operations the
table's modes need there.
"""

import dataclasses
from typing import Optional

FIVE_MODES = ('clean', 'input', 'latent', 'feature', 'feature_reversed')

# Operations at the mixing points.
KEEP = 'keep'  # Leave the activations (or targets) as they are.
MIXUP = 'mixup'  # mix_lam(h, h'), h' = h[perm].
CUTMIX = 'cutmix'  # Paste the box of x' into x.
# PuzzleMix's blocks of x and x' (`puzzlemix`), made before the network (they need the
# saliency of x and a graph cut on the host) and handed in at stage 0.
PUZZLEMIX = 'puzzlemix'
# Co-Mixup's outputs from groups of inputs (`comixup`), made and handed in the same way.
COMIXUP = 'comixup'
PREMIXED = (PUZZLEMIX, COMIXUP)  # Made before the network, with their targets.
# (13): align h' onto h, then mix_lam(h, aligned); with `Mode.reverse`, (14): align h onto
# h', then mix_lam(aligned, h').
ALIGN = 'align'


@dataclasses.dataclass(frozen=True)
class Mode:
  """What a mode does at each mixing point (see the module docstring)."""
  name: str
  layer: Optional[int] = None  # Stage of E whose output (0: x) is mixed.
  layer_op: str = KEEP  # MIXUP, CUTMIX, PUZZLEMIX or COMIXUP at `layer`.
  features_op: str = KEEP  # At A: MIXUP or ALIGN.
  latent_op: str = KEEP  # At z: MIXUP or ALIGN.
  reverse: bool = False  # ALIGN at A is (14), not (13).

  @property
  def clean(self):
    return self.layer is None and self.features_op == KEEP and self.latent_op == KEEP

  @property
  def aligns(self):
    """Whether the mode solves a transport plan (feature or latent alignment)."""
    return ALIGN in (self.features_op, self.latent_op)


def mode(name, *, align=True, align_latent=False):
  """The `Mode` called `name`; `align` and `align_latent` as in `config.mixup`."""
  if name == 'clean':
    return Mode(name)
  if name == 'input':
    return Mode(name, layer=0, layer_op=MIXUP)
  if name == 'cutmix':
    return Mode(name, layer=0, layer_op=CUTMIX)
  if name == 'puzzlemix':
    return Mode(name, layer=0, layer_op=PUZZLEMIX)
  if name == 'comixup':
    return Mode(name, layer=0, layer_op=COMIXUP)
  if name == 'latent':
    return Mode(name, latent_op=ALIGN if align_latent else MIXUP)
  if name == 'feature':
    return Mode(name, features_op=ALIGN if align else MIXUP)
  if name == 'feature_reversed':
    return Mode(name, features_op=ALIGN if align else MIXUP, reverse=align)
  if name.startswith('layer') and name[5:].isdigit() and int(name[5:]) > 0:
    return Mode(name, layer=int(name[5:]), layer_op=MIXUP)
  raise ValueError(f'Unknown mode {name!r}; valid: {", ".join(FIVE_MODES)}, cutmix, '
                   'puzzlemix, comixup, layer<k> (k >= 1).')
