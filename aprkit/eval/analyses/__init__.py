"""Analyses: measurement procedures that build their own stimuli and run a model on them.

Each is named after the suite that runs it (``aprkit eval --suite NAME``):

- :mod:`.phase_bias`: phase-vs-amplitude bias on Fourier recombinations of image pairs and the patch-shuffle
  control (suite ``phase-bias``);
- :mod:`.shape_bias`: shape-vs-texture bias on the Geirhos et al. cue-conflict stimuli (suite ``shape-bias``);
- :mod:`.transplant`: the internal phase / sign transplant test over a network's blocks, with its tables and
  plots in :mod:`.transplant_tables` (suite ``transplant``).

Nothing is imported here; the public functions are exported by :mod:`aprkit.eval`.
"""
