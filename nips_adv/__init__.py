"""nips_adv: attacks, defense, submissions and evaluation for the NIPS 2017 adversarial competition.

Layout (one room per concern):
- ``contract``: the competition's formats and limits (PNG I/O and image names, epsilon box, CSVs,
  class names, constants; ``atomic``, the one atomic file writer).
- ``models``: architectures, the weights catalogue and the classifier (the only place with sessions).
- ``attacks``: the one sign-gradient loop and the attack folder job.
- ``defenses``: input transforms, the denoiser, recipes and the defense folder job.
- ``jobs``: what the folder jobs share (batches, progress, JobReport).
- ``evaluation``: accuracy on a folder and the organisers' attack-versus-defense evaluation.
- ``submission``: packaging, validating and running submissions; ``archives`` their zip/tar files.
- ``download``: datasets and reference checkpoints.
- ``cli``: thin click shells over the library; ``demo`` and ``bench`` are applications of it.
"""

__version__ = "0.1.0"
