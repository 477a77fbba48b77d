"""Classifying fruit from a run's features: the linear probe ``evaluate`` trains and scores."""
