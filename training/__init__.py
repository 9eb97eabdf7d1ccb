"""Offline training: synthesis, dataset, training loop, evaluation, export and publish."""
