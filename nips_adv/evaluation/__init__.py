"""Evaluate attacks against defenses as the organisers' ``run_attacks_and_defenses.py`` did.

``plan`` finds the submissions and the dataset and cuts the work into pieces (one submission on
one batch of at most 100 images); ``pieces`` runs one piece; ``executors`` runs many (local
threads or a Ray cluster); ``pool`` gathers the adversarial images under anonymous names;
``scoring`` turns classifications into the organisers' matrices and rankings; ``report``
writes report.html and results.json; ``run`` ties them together.
"""
