"""Request images to uint8 RGB arrays, with the limits a server needs (size, bytes, channels)."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from serving.backends.base import invalid
from weakseg.export.runtime import MIN_SIDE


@dataclass(frozen=True)
class ImageLimits:
    """What one request may carry."""

    max_side: int = 4096
    max_pixels: int = 4096 * 4096
    min_side: int = MIN_SIDE

    def check(self, height: int, width: int) -> None:
        """INVALID_ARGUMENT unless min_side <= height, width <= max_side and height*width <= max_pixels."""
        if height < self.min_side or width < self.min_side:
            raise invalid(f"image is {height}x{width}; both sides must be at least {self.min_side} pixels")
        if height > self.max_side or width > self.max_side or height * width > self.max_pixels:
            raise invalid(
                f"image is {height}x{width}; this server accepts sides up to {self.max_side} and "
                f"{self.max_pixels} pixels in all"
            )


def decode_encoded(data: bytes, limits: ImageLimits) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 HxWx3 RGB; the size is checked from the header before decoding."""
    if not data:
        raise invalid("image.encoded is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.format not in ("PNG", "JPEG"):
                raise invalid(f"image.encoded is {img.format or 'an unknown format'}; send PNG or JPEG")
            limits.check(img.height, img.width)
            img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise invalid(f"image.encoded does not decode as PNG or JPEG ({type(e).__name__}: {e})") from None
    if img.mode not in ("RGB", "L", "P", "RGBA", "LA", "I;16", "I", "CMYK"):
        raise invalid(f"image.encoded has unsupported pixel mode {img.mode!r}")
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def decode_raw(data: bytes, height: int, width: int, channels: int, limits: ImageLimits) -> np.ndarray:
    """A raw uint8 HWC buffer -> HxWx3 array, checking channels, size and byte length."""
    if channels != 3:
        raise invalid(f"image.raw.channels is {channels}; raw images must be RGB with 3 channels")
    limits.check(height, width)
    expected = height * width * channels
    if len(data) != expected:
        raise invalid(f"image.raw.data has {len(data)} bytes but {height}x{width}x{channels} needs {expected}")
    return np.frombuffer(data, dtype=np.uint8).reshape(height, width, channels)
