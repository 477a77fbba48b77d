"""Pure image transforms: which files are images, their labels, and decoding to model input.

Nothing here touches Spark or the network; every function is unit-tested on its own.
"""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
from PIL import Image, ImageOps

#: Side of the square image MobileNetV2 takes, in pixels.
MODEL_INPUT_SIZE = 224

#: File extensions read as images, compared case-insensitively.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

#: Hadoop glob for Spark's ``pathGlobFilter``: the same extensions in any letter case.
IMAGE_GLOB = "*.{[jJ][pP][gG],[jJ][pP][eE][gG],[pP][nN][gG]}"

#: Images with more pixels than this are refused before decoding: a tiny compressed file can
#: claim a huge canvas (a "decompression bomb") and exhaust a worker's memory.  50 megapixels
#: admits any camera photo (a 6000x4000 phone picture is 24 megapixels).
MAX_IMAGE_PIXELS = 50_000_000


#: Why an image was rejected: the first word of its error message.
REJECT_REASONS = ("empty", "not_an_image", "decompression_bomb", "corrupt", "unreadable")


class ImageDecodeError(ValueError):
    """An image file that cannot be turned into model input.

    ``reason`` is one of REJECT_REASONS; the message reads ``"<reason>: <detail>"``.
    """

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def reject_reason(error: str) -> str:
    """Return the reason code at the start of an error message (``"corrupt"`` if none)."""
    head = error.partition(":")[0]
    return head if head in REJECT_REASONS else "corrupt"


def is_image_path(path: str) -> bool:
    """Return True when ``path`` names a JPEG or PNG file by its extension, in any case."""
    return path.lower().endswith(IMAGE_EXTENSIONS)


#: Strips ``scheme://authority`` or ``scheme:`` from a URI, keeping the path; the same
#: pattern for Python's ``re`` and Java's (``chain/listing.py``'s Spark column).  ``(?s)``:
#: a folder name may hold line breaks (``\n``, ``\r``, U+0085, U+2028…), which ``.``
#: otherwise stops at, and the whole pattern then matches nothing: an empty label.
URI_PATH = r"(?s)^(?:[A-Za-z][A-Za-z0-9+.-]*://[^/]*|[A-Za-z][A-Za-z0-9+.-]*:)?(.*)$"


def label_from_path(path: str, root: str | None = None) -> str:
    """Return the label of an image: the name of its parent folder, exactly as written.

    Works for plain paths and for URIs as Spark writes them (``file:/…``, ``file:///…``,
    ``s3://bucket/…``: not percent-encoded, so ``%``, ``#`` and ``?`` are name characters,
    never escapes, fragments or queries).  Every character a file name may hold is kept,
    control characters included, and nothing is normalised (an NFC and an NFD name are two
    labels, as they are two folders).  A file directly in the input folder ``root``
    (written as Spark writes paths, e.g. ``file:/data/in``), or at a bucket's root, has no
    class folder and gets the empty label ``""``.
    """
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if root is not None and parent == root.rstrip("/"):
        return ""
    names = re.match(URI_PATH, path).group(1).split("/")
    return names[-2] if len(names) >= 2 else ""


def decode_image(content: bytes, size: int = MODEL_INPUT_SIZE) -> np.ndarray:
    """Decode image bytes to a ``(size, size, 3)`` uint8 RGB array.

    The steps are the ones the original notebook used: Pillow decode, EXIF orientation
    applied (a phone photo is featurized upright), conversion to RGB, then
    ``Image.resize`` to ``size`` x ``size`` with Pillow's bicubic filter.

    Raises ImageDecodeError with a readable reason for empty, truncated, non-image and
    oversized (decompression bomb) inputs.
    """
    if not content:
        raise ImageDecodeError("empty", "the file has 0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content)) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ImageDecodeError(
                        "decompression_bomb",
                        f"{width}x{height} pixels is over the limit of {MAX_IMAGE_PIXELS}",
                    )
                image = ImageOps.exif_transpose(image)
                rgb = _to_8bit(image).convert("RGB")
                resized = rgb.resize((size, size), Image.Resampling.BICUBIC)
                return np.asarray(resized, dtype=np.uint8)
    except ImageDecodeError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageDecodeError("not_an_image", "Pillow cannot identify this file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageDecodeError("decompression_bomb", str(error)) from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageDecodeError("corrupt", f"{type(error).__name__}: {error}") from None


def _to_8bit(image: Image.Image) -> Image.Image:
    """Return 16-bit and 32-bit integer grayscale images scaled to 8 bits ("L"); Pillow's
    own conversion would clip them to 255 (a white image).  Other modes pass through."""
    if image.mode.startswith("I;16") or (image.mode == "I" and image.getextrema()[1] > 255):
        values = np.asarray(image, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    return image


def preprocess(batch: np.ndarray) -> np.ndarray:
    """Scale a ``(n, 224, 224, 3)`` RGB batch (0..255) to MobileNetV2's input range [-1, 1].

    Returns float32, computed as ``keras.applications.mobilenet_v2.preprocess_input`` does
    (``x / 127.5 - 1``, bit for bit) without importing Keras, so that a worker running ONNX
    Runtime never loads TensorFlow.
    """
    result = np.divide(batch, np.float32(127.5), dtype=np.float32)
    result -= np.float32(1.0)
    return result
