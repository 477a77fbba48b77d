"""The fruit classifier on a run's features: ``train`` fits and tests it (``training``),
``export`` writes it as on-device models (``folding``, ``tflite``, ``model_card``), ``predict``
runs one without Spark (``runtime``)."""
