"""Integrations with the libraries users train with (``graphopt.integrations.transformers``)."""
