"""Defaults shared by the command line and the job; no imports, so the CLI starts fast."""

#: Images per CNN batch and per Arrow batch.  32 keeps a Python worker near 1.3 GB at the
#: same speed as 64, which needs about 1.7 GB (the activations double).
DEFAULT_BATCH_SIZE = 32
