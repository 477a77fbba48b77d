"""The command line's commands: ``run``, ``transform`` and ``evaluate``."""
