"""nips_adv: attacks, defense, submissions and evaluation for the NIPS 2017 adversarial competition.

Layout:
- ``contract``: the competition's file formats and limits (PNG I/O, epsilon box, CSVs).
- ``models``: the model registry and the TensorFlow graph runtime (the only place with sessions).
- ``attacks``: the one sign-gradient loop and the directory-level attack job.
- ``cli``: thin click shells over the library.
"""

__version__ = "0.1.0"
