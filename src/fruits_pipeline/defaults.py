"""Defaults shared by the command line and the job; no imports, so the command line starts
fast and imports without numpy (the EMR submitter checks job options with it)."""

#: Images per CNN batch and per Arrow batch: larger batches are no faster and cost memory
#: in every Python worker (docs/performance.md has the measurements).
DEFAULT_BATCH_SIZE = 16

#: Keep the fewest principal components whose cumulative explained variance reaches this.
DEFAULT_VARIANCE_THRESHOLD = 0.95

#: The L2 regularisations ``train`` tries on its validation part (Spark's ``regParam``).
DEFAULT_REG_PARAMS = (0.0, 1e-5, 1e-4, 1e-3, 1e-2)
