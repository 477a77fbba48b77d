"""The job's chain, one module a step: list the images (``listing``), load the weights on the
driver (``weights``), extract features in the workers (``extract``, with the pure image
functions of ``images``), reduce them (``pca``); ``incremental`` decides what a run reuses."""
