"""Defense building blocks: what a defense puts in front of the classifiers, and how to evaluate it.

- ``transforms``: input transforms as TF graph functions following the model layer's transform
  interface (pixels ``(B, H, W, 3)`` float32 0..255 -> ``(C*B, H', W', 3)`` 0..255, copy-major,
  attributes ``copies`` and ``name``): random resize and pad, JPEG, bit-depth reduction, median and
  total-variation smoothing, horizontal flips, and ``Compose`` to chain them. JPEG and bit depth
  take ``straight_through=True`` (BPDA) so an adaptive evaluation can differentiate them.
- ``denoiser``: a small HGD-style U-Net denoiser (graph builder, .npz weights, a training step)
  and the transform that puts trained weights in front of the classifiers.
- ``eot``: expectation over transformation, averaging gradients over random passes.
- ``recipes``: recipes (``denoiser+resize-pad``) parsed into transforms, and ``DefendedClassifier``,
  the defense as a model: it classifies through the recipe and gives EOT/BPDA gradients of it.
- ``directory``: the defense's folder job (``nips-defense``), random passes fitted to a time budget.
- ``training``: the denoiser's training data (attacks crafted here, cached) and resumable training loop.

TensorFlow is imported lazily (through ``nips_adv.models.tf_compat``) when a graph is built.
"""
