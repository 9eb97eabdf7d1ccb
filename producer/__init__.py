"""The producer: catalogue import, nightly backfill, reaper, reports, demo. Never imports torch."""
