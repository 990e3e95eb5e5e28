"""Image files as crawled from shops: validity by decoding, stored pixel frame, letterboxing, hashes.

Every image of the pipeline is read here (preprocess cache, `predict_image`,
the synthetic set's size reader), so sizes, pixels and transforms agree:

* **Stored frame.** Annotations are in the pixel frame the file stores, so an
  EXIF orientation tag is ignored everywhere (`cv2.IMREAD_IGNORE_ORIENTATION`;
  the size comes from the JPEG frame header, not from EXIF).
* **Validity by decoding.** An image is bad when it is empty, not an image the
  decoders know, fails to decode, or is cut short. A JPEG is cut short when its
  data ends before the decoder reaches the end-of-image marker of the main image
  (libjpeg's "premature end of JPEG file": it would fill the rest grey), a PNG
  when it ends before its IEND chunk. Bytes after the end marker are ignored,
  as the decoders ignore them.
* **Kinds.** Baseline and progressive JPEG (colour, grayscale, CMYK/YCCK), PNG
  (gray, RGB, RGBA, palette; 8 or 16 bit) whatever the file name says (.jpg,
  .JPG, .png); other formats OpenCV or Pillow decode (WebP, BMP, GIF: first frame).
  Transparent pixels are composited onto white, as a shop page shows them.
* **Reduced decoding.** A JPEG is decoded at 1/2, 1/4 or 1/8 resolution by the
  IDCT itself when that still leaves at least the letterbox's pixels and the
  stored sides divide exactly (so pixel i of the reduced image covers stored
  pixels [i*r, (i+1)*r) and the transform stays exact).
"""
from __future__ import annotations

import functools
import hashlib
import io
import os
import re
from pathlib import Path
from typing import Tuple

import cv2
import numpy as np

from pipeline import frames

#: near-duplicate threshold: Hamming distance of two 64-bit perceptual hashes (`phash`)
PHASH_MAX_DISTANCE = 3

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
#: the next marker inside entropy-coded data: 0xFF not followed by a stuffed 0x00, a restart
#: marker (D0-D7) or fill (FF)
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ImageError(ValueError):
    """An image that cannot be used (missing, empty, truncated, corrupt, not an image)."""


# --------------------------------------------------------------------------- structure


def _jpeg_scan(data: bytes) -> Tuple[int, int]:
    """(width, height) of the main image of JPEG bytes (stored frame), checking it is complete.

    Walks the marker segments as libjpeg does (frame header, scans, up to the
    end-of-image marker; stray bytes between segments skipped like its
    `next_marker`) and raises ImageError when the data ends first — the case a
    decoder only warns about and fills grey. Thumbnails inside APPn segments are
    skipped by segment length; bytes after the end marker are never looked at.
    """
    n = len(data)
    pos, size = 2, None
    while True:
        while True:  # next marker: 0xFF then a byte other than a stuffed 0x00 or fill 0xFF
            j = data.find(b"\xff", pos)
            if j < 0 or j + 1 >= n:
                raise ImageError("truncated JPEG (data ends before the end-of-image marker)")
            marker = data[j + 1]
            if marker == 0xFF:
                pos = j + 1
            elif marker == 0x00:
                pos = j + 2
            else:
                pos = j
                break
        if marker == 0xD9:  # EOI
            if size is None:
                raise ImageError("corrupt JPEG (no frame header)")
            return size
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:  # standalone markers
            pos += 2
            continue
        if pos + 4 > n:
            raise ImageError("truncated JPEG (data ends inside a header)")
        length = (data[pos + 2] << 8) | data[pos + 3]
        end = pos + 2 + max(length, 2)
        if end > n:
            raise ImageError("truncated JPEG (data ends inside a header)")
        if marker in _SOF and size is None and length >= 7:
            height = (data[pos + 5] << 8) | data[pos + 6]
            width = (data[pos + 7] << 8) | data[pos + 8]
            if width == 0 or height == 0:
                raise ImageError(f"corrupt JPEG (frame of {width}x{height} pixels)")
            size = (width, height)
        pos = end
        if marker == 0xDA:  # SOS: entropy-coded data up to the next real marker
            found = _NEXT_MARKER.search(data, pos)
            if found is None:
                raise ImageError("truncated JPEG (data ends inside the image data)")
            pos = found.start()


def _png_check(data: bytes) -> None:
    """Raise ImageError when PNG bytes end before their IEND chunk (chunks walked by length)."""
    pos, n = 8, len(data)
    while pos + 8 <= n:
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if kind == b"IEND":
            return
        pos += 12 + length
    raise ImageError("truncated PNG (data ends before the IEND chunk)")


def image_size(data: bytes) -> Tuple[int, int]:
    """(width, height) in the stored pixel frame (EXIF orientation ignored), whatever the file name.

    JPEGs are also checked to be complete. Raises ImageError for bytes no reader knows.
    """
    if not data:
        raise ImageError("empty image file")
    if data[:2] == b"\xff\xd8":
        return _jpeg_scan(data)
    if data[:8] == _PNG_MAGIC and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    from PIL import Image  # other formats: header only

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception as err:  # noqa: BLE001 - PIL raises many kinds
        head = data[:512].lstrip().lower()
        if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
            raise ImageError("not a readable image (an HTML/XML page saved under an image name)") from None
        raise ImageError(f"not a readable image ({type(err).__name__})") from None


def read_bytes(path) -> bytes:
    """The bytes of an image file; ImageError (missing, unreadable, empty) with the reason."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ImageError(f"cannot read image: {err.strerror or err}") from None
    if not data:
        raise ImageError("empty image file")
    return data


def resolve_file(base, image_id: str, depth: int = 0) -> str:
    """Path of `image_id` under `base`; when absent as written, a file whose path differs only in
    letter case or in backslash separators (a CSV written on Windows, `.JPG` on disk).

    depth: also let that many directory levels above `base` differ in case (the worker only
    sees the joined path). Returns the path as written when nothing (or more than one file) matches.
    """
    plain = os.path.join(base, image_id)
    if os.path.exists(plain):
        return plain
    path = Path(base) / image_id
    parts = image_id.replace("\\", "/").split("/")
    found = Path(base)
    for _ in range(depth):
        if found.parent == found or found.exists():
            break
        parts.insert(0, found.name)
        found = found.parent
    for part in parts:
        if (found / part).exists():
            found = found / part
            continue
        match = [n for n in _listing(str(found)) if n.lower() == part.lower()]
        if len(match) != 1:
            return str(path)  # reported as missing, under the name the CSV gives
        found = found / match[0]
    return str(found)


@functools.lru_cache(maxsize=4096)
def _listing(directory: str) -> Tuple[str, ...]:
    try:
        return tuple(os.listdir(directory))
    except OSError:
        return ()


# --------------------------------------------------------------------------- decoding


def _reduction(width: int, height: int, needed: int) -> int:
    """Largest r in (8, 4, 2, 1) with max side / r >= needed and both sides divisible by r."""
    for r in (8, 4, 2):
        if max(width, height) / r >= needed and width % r == 0 and height % r == 0:
            return r
    return 1


_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}


def _to_bgr(img: np.ndarray) -> np.ndarray:
    """Any decoded array (H, W), (H, W, 1|3|4), uint8 or uint16 → (H, W, 3) uint8 BGR, alpha onto white."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2 or img.shape[2] == 1:
        return cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 2:  # gray + alpha
        img = np.dstack([img[:, :, 0]] * 3 + [img[:, :, 1]])
    if img.shape[2] == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0
        return np.round(img[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return img


def _decode_pil(data: bytes) -> np.ndarray:
    """Fallback decoder (formats OpenCV lacks): (H, W, 3) uint8 BGR in the stored frame."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = np.asarray(im.convert("RGBA"))
                return _to_bgr(rgba[:, :, [2, 1, 0, 3]])
            return np.asarray(im.convert("RGB"))[:, :, ::-1].copy()
    except Exception as err:  # noqa: BLE001
        raise ImageError(f"corrupt image (decoder failed: {type(err).__name__})") from None


def decode(data: bytes, needed: int = 0) -> Tuple[np.ndarray, int, int, int]:
    """Decode image bytes in the stored frame, reduced by the JPEG decoder where `needed` allows.

    needed: the longest side (pixels) the caller will resize to (0: full resolution).
    Returns (image (ceil(H/r), ceil(W/r), 3) uint8 BGR, width, height, r) with (width,
    height) the stored size. Raises ImageError with the reason.
    """
    try:
        return _decode(data, needed)
    except cv2.error as err:  # an odd layout OpenCV refuses: a reason, never a crash of the whole stage
        raise ImageError(f"corrupt image (OpenCV: {str(err).strip().splitlines()[-1][:120]})") from None


def _decode(data: bytes, needed: int) -> Tuple[np.ndarray, int, int, int]:
    width, height = image_size(data)  # also: a JPEG cut short is refused here
    is_jpeg = data[:2] == b"\xff\xd8"
    if data[:8] == _PNG_MAGIC:
        _png_check(data)
    r = _reduction(width, height, needed) if is_jpeg and needed else 1
    buf = np.frombuffer(data, np.uint8)
    if is_jpeg:
        img = cv2.imdecode(buf, _REDUCED[r] | cv2.IMREAD_IGNORE_ORIENTATION)
    else:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)  # as stored: no EXIF rotation
        if img is not None and img.ndim == 3 and img.shape[2] == 4 and img[:, :, 3].min() == 255:
            img = img[:, :, :3]
    if img is None or img.size == 0:
        img, r = _decode_pil(data), 1
    img = _to_bgr(img)
    want = (-(-height // r), -(-width // r))
    if img.shape[:2] != want:
        raise ImageError(f"corrupt image (decoded {img.shape[1]}x{img.shape[0]} pixels, "
                         f"header says {width}x{height})")
    return img, width, height, r


def load_letterboxed(path, size: int, margin: int = 0) -> Tuple[np.ndarray, int, int, np.ndarray]:
    """Read an image file and letterbox it into a size×size RGB uint8 array (stored frame).

    Returns (image (S, S, 3) uint8 RGB, width, height, params (4,) stored original → input
    pixels, as frames.letterbox_params). Raises ImageError with the reason.
    """
    img, width, height, _ = decode(read_bytes(path), size - 2 * margin)
    try:
        return letterbox(img, width, height, size, margin)
    except cv2.error as err:
        raise ImageError(f"corrupt image (OpenCV: {str(err).strip().splitlines()[-1][:120]})") from None


def letterbox(img: np.ndarray, width: int, height: int, size: int, margin: int = 0):
    """Letterbox a decoded BGR image (full or exactly reduced resolution of a width×height image).

    Returns (image (S, S, 3) uint8 RGB, width, height, params (4,)).
    """
    params = frames.letterbox_params(width, height, size, margin)
    new_w, new_h = frames.resized_shape(params, width, height)
    if img.shape[:2] != (new_h, new_w):
        # area averaging where the image shrinks a lot (anti-aliasing); bilinear for small changes,
        # e.g. the last step after a reduced JPEG decode (128 → 120 px): OpenCV's area path for
        # such non-integer factors costs ~10x more and changes nothing visible
        interp = cv2.INTER_AREA if img.shape[1] > 1.5 * new_w else cv2.INTER_LINEAR
        img = cv2.resize(img, (new_w, new_h), interpolation=interp)
    ox, oy = int(params[2]), int(params[3])
    out = cv2.copyMakeBorder(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), oy, size - oy - new_h, ox, size - ox - new_w,
                             cv2.BORDER_CONSTANT, value=(0, 0, 0))
    return out, width, height, params


# --------------------------------------------------------------------------- hashes


def content_hash(data: bytes) -> str:
    """Hex SHA-1 of the file bytes: byte-identical files share it."""
    return hashlib.sha1(data).hexdigest()


def phash(img: np.ndarray) -> int:
    """64-bit DCT perceptual hash of a decoded image (any size, BGR or gray), as an int.

    The image is reduced to 32x32 gray (aspect ignored), its 2-D DCT taken and the
    8x8 lowest frequencies (DC excluded from the median) thresholded at their median.
    Re-encoded, resized or slightly retouched copies differ in a few bits.
    """
    gray = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].ravel()
    ac = np.partition(low[1:], (31, 32))
    bits = low > 0.5 * (ac[31] + ac[32])  # the median of the 63 AC terms
    return int(np.packbits(bits.astype(np.uint8)).view(">u8")[0])


def hamming(a: np.ndarray, b) -> np.ndarray:
    """Bit differences between 64-bit hashes: a (N,) uint64 against b (scalar or broadcastable)."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64)))
