"""Scoring, and the organisers' evaluation of attacks against defenses.

``accuracy`` scores one folder (or a defense's result.csv) against the dataset CSV. The rest
evaluates as the organisers' ``run_attacks_and_defenses.py`` did: ``plan`` finds the submissions
and the dataset and cuts the work into pieces (one submission on one batch of at most 100
images); ``pieces`` runs one piece and keeps its record; ``executors`` runs many (local threads
or a Ray cluster); ``pool`` gathers the adversarial images under anonymous names; ``matrices``
turns classifications into the organisers' matrices and rankings; ``report`` writes report.html
and results.json; ``run`` ties them together; ``layout`` names every file of the intermediate folder.
"""
