"""Inference engines: what the driver broadcasts, and what each Python worker runs."""
