"""What one request may carry, how long it may take to arrive, and how much may run at once."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

MAX_ASPECT_RATIO = 10
"""Longest side over shortest side accepted for an image. Preprocessing scales the short side up
to the model's input size, so a 1 x 12,000 strip would become millions of pixels."""

MAX_HEADER_BYTES = 16 * 1024
"""Largest request line plus headers the server buffers (h11's incomplete-event limit)."""

MULTIPART_PART_OVERHEAD = 64 * 1024
"""Room for one multipart part's boundary and headers on top of its file's bytes."""


@dataclass(frozen=True)
class ServeLimits:
    """Limits of the prediction service.

    Args:
        max_file_bytes: largest accepted image file.
        max_images: most images (multipart parts) in one request.
        max_pixels: largest accepted image (width x height), read from the header before
            decoding, so a decompression bomb is refused without being decoded.
        max_side: longest accepted image side in pixels.
        max_aspect_ratio: longest side over shortest side, read from the header.
        max_concurrent: requests whose inference runs at the same time; the rest wait.
        max_waiting: requests admitted beyond those running (uploading or waiting their turn);
            the next is answered 503 before its body is read, so a burst cannot pile up uploads.
        max_connections: open connections per server process; beyond that the server answers
            503 (uvicorn's ``limit_concurrency``).
        header_timeout_s: seconds a connection may take to send a request's line and headers,
            from when it opens or its previous response ends.
        body_timeout_s: seconds a request body may take to arrive in full.
        keep_alive_s: seconds an idle keep-alive connection stays open.
    """

    max_file_bytes: int = 20 * 1024 * 1024
    max_images: int = 32
    max_pixels: int = 40_000_000
    max_side: int = 12_000
    max_aspect_ratio: int = MAX_ASPECT_RATIO
    max_concurrent: int = 1
    max_waiting: int = 48
    max_connections: int = 1024
    header_timeout_s: int = 10
    body_timeout_s: int = 120
    keep_alive_s: int = 5

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{field.name} must be a positive integer, got {value!r}")

    @property
    def max_request_bytes(self) -> int:
        """Largest request body: every file at its limit, plus room for the multipart framing."""
        return self.max_images * self.max_part_bytes

    @property
    def max_part_bytes(self) -> int:
        """Largest multipart part: a file at its limit plus its boundary and headers."""
        return self.max_file_bytes + MULTIPART_PART_OVERHEAD

    @property
    def max_admitted(self) -> int:
        """Requests admitted at once: those running plus those uploading or waiting."""
        return self.max_concurrent + self.max_waiting

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeLimits:
        return cls(**json.loads(text))
