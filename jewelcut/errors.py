"""Failures that end one image (never its batch, chunk or worker) with a recorded reason."""

from __future__ import annotations

# Every rejection reason there is (the gate's, worker.gate.decide), with what it means. A
# rejection is a decision about a photo that was processed, not a failure.
REJECTION_REASONS = {
    "no_object": "nothing found: the cleaned mask is empty",
    "area_too_small": "the object covers less of the photo than the version's min_area",
    "area_too_large": "the object covers more of the photo than the version's max_area",
    "low_confidence": "the confidence is under the version's min_confidence",
}

# Every failure reason there is.
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
