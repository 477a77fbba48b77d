"""The command line's commands: ``run``, ``transform``, ``train``, ``export`` and ``predict``."""
