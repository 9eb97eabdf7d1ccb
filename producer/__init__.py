"""The producer: catalogue import, nightly backfill, admin enqueue helpers, reaper, reports. No torch."""
