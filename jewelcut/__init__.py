"""jewelcut: background removal for jewellery listing photos, as a batch job on a task queue.

This package is the shared core (settings, schema, storage, queue app, CLI) and imports no torch.
"""

__version__ = "0.1.0"
