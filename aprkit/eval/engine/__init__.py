"""The evaluation engine: models and data in, predictions and cached results out.

- :mod:`.batches`: the evaluation's batch policy (pinned on CUDA, read ahead, each ``torchrun`` rank's shard) over
  :func:`aprkit.data.iter_batches`;
- :mod:`.datasets`: data specs, tensors and datasets as datasets, and their cache identity;
- :mod:`.inference`: devices and :func:`~.inference.predict` (:func:`~.inference.start_predict`: without the wait);
- :mod:`.data_checks`: the data against the model (class names, input size, a ``limit`` of class-sorted data);
- :mod:`.cache`: the result cache and its keys (weights fingerprint, data identity, options);
- :mod:`.fingerprint`: the weights fingerprint of a model (every module setting, hook and tensor);
- :mod:`.models`: the models of an evaluation loaded and placed on the device, in channels_last unless that failed;
- :mod:`.outdir`: the output folder's run cache and suite index;
- :mod:`.config`: the settings of ``aprkit eval`` (config files, flags, ``--set``);
- :mod:`.runner`: :func:`~.runner.evaluate`, which runs the suites (:mod:`aprkit.eval.suites`) on each model and
  returns :class:`~aprkit.eval.report.results.Results`.

Nothing is imported here: the suites import :mod:`.inference` and :mod:`.cache`, and :mod:`.runner` imports the
suites.
"""
