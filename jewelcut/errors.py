"""Failures that end one image (never its batch, chunk or worker) with a recorded reason."""

from __future__ import annotations

# Every failure reason there is. Rejections (area_too_small, ...) are decisions, not failures.
FAILURE_REASONS = (
    "fetch_error",  # the source could not be read (missing object, S3 down after retries, ...)
    "unsupported_source",  # a source URI this deployment does not fetch (scheme, bucket, path)
    "decode_error",  # zero bytes, truncated, not an image
    "unsupported_format",  # an image format we do not take (GIF, PDF, SVG, ...)
    "too_large",  # over the pixel limit (refused before decoding)
    "too_small",  # under the minimum side
    "processing_error",  # anything else that went wrong with this one image
    "too_many_attempts",  # the reaper gave up on it
)


class ImageFailure(Exception):
    """One image could not be processed; `reason` is one of FAILURE_REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in FAILURE_REASONS:
            raise ValueError(f"unknown failure reason {reason!r}")
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
