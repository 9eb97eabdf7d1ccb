"""The GPU worker: Celery tasks and the inference pipeline (model, cleanup, gate, cutout)."""
