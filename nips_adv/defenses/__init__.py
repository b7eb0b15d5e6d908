"""Defense building blocks: what a defense puts in front of the classifiers, and how to evaluate it.

- ``transforms``: input transforms as TF graph functions following the model layer's transform
  interface (pixels ``(B, H, W, 3)`` float32 0..255 -> ``(C*B, H', W', 3)`` 0..255, copy-major,
  attributes ``copies`` and ``name``): random resize and pad, JPEG, bit-depth reduction, median and
  total-variation smoothing, horizontal flips, and ``Compose`` to chain them. JPEG and bit depth
  take ``straight_through=True`` (BPDA) so an adaptive evaluation can differentiate them.
- ``denoiser``: a small HGD-style U-Net denoiser (graph builder, .npz weights, a training step)
  and the transform that puts trained weights in front of the classifiers.
- ``eot``: expectation over transformation, averaging gradients over random passes.

TensorFlow is imported lazily (through ``nips_adv.models.tf_compat``) when a graph is built.
"""
