"""What one request may carry, and how much inference may run at once."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class ServeLimits:
    """Limits of the prediction service.

    Args:
        max_file_bytes: largest accepted image file.
        max_images: most images in one request.
        max_pixels: largest accepted image (width x height), read from the header before
            decoding, so a decompression bomb is refused without being decoded.
        max_side: longest accepted image side in pixels.
        max_concurrent: requests whose inference runs at the same time; the rest wait.
        max_waiting: requests allowed to wait; beyond that the service answers 503 at once, so a
            burst cannot pile up uploads in memory.
    """

    max_file_bytes: int = 20 * 1024 * 1024
    max_images: int = 32
    max_pixels: int = 40_000_000
    max_side: int = 12_000
    max_concurrent: int = 1
    max_waiting: int = 16

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{field.name} must be a positive integer, got {value!r}")

    @property
    def max_request_bytes(self) -> int:
        """Largest request body: every file at its limit, plus room for the multipart framing."""
        return self.max_images * (self.max_file_bytes + 64 * 1024)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeLimits:
        return cls(**json.loads(text))
