"""Offline training: synthesis, dataset, training loop, evaluation and calibration, export, publish."""
