"""Putting a weight image on a device: check it fits, write it, verify it.

Kept apart from :class:`~mmfree.driver.Device` because where an image goes is the business of a
:class:`~mmfree.driver.memory_map.MemoryMap`, which the accelerator's memory-map module supplies.
"""

from dataclasses import dataclass
import os
import time
import zlib

from .errors import IncompatibleImage, VerifyError
from .memory_map import memory_map_for

__all__ = ["check_image", "upload", "UploadReport"]


@dataclass
class UploadReport:
    bytes: int
    seconds: float
    placements: list
    rewritten: int          # placements written a second time after a failed VERIFY

    @property
    def rate(self):
        """Bytes per second."""
        return self.bytes / self.seconds if self.seconds > 0 else float("inf")


def _image_bytes(image):
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            return f.read()
    raise TypeError(f"image must be bytes or a path, not {type(image).__name__}")


def check_image(info, image, memory_map=None):
    """Check a weight image against a device's INFO before anything is sent.

    Returns ``(header, placements)``. Raises :class:`mmfree.image.ImageError` for a damaged image (its
    structure, a CRC, or a value no model holds, such as a base-3 trit byte above 242, whatever the
    memory map) and :class:`IncompatibleImage` (one line) for an image this device cannot run.
    """
    from ..image import parse_image
    memory_map = memory_map_for(info) if memory_map is None else memory_map
    data = _image_bytes(image)
    header, sections = parse_image(data, values=True)
    if header.format_version != info.image_format_version:
        raise IncompatibleImage(f"the device reads image format version {info.image_format_version}; the "
                                f"image is version {header.format_version}")
    if header.numeric_version != info.numeric_spec_version:
        raise IncompatibleImage(f"the device implements numeric-spec version {info.numeric_spec_version}; "
                                f"the image needs version {header.numeric_version}")
    s = header.shape
    for what, need, have in (("vocabulary", s.vocab_size, info.max_vocab),
                             ("hidden size", s.hidden_size, info.max_hidden),
                             ("layers", s.num_layers, info.max_layers),
                             ("intermediate size", s.intermediate_size, info.max_intermediate)):
        if need > have:
            raise IncompatibleImage(f"the model does not fit the device: {what} {need} > {have}")
    placements = memory_map.place(data, header, sections)
    memory_map.check(info, placements)
    return header, placements


def upload(device, image, memory_map=None, *, progress=None, verify=True, reset=True):
    """Upload a weight image (bytes or a path) to ``device`` through ``memory_map``
    (the map the device's INFO asks for if None: :func:`~mmfree.driver.memory_map.memory_map_for`).

    INFO first: an image that does not fit is refused before a byte of it is sent. Then every placement
    is written, then VERIFYed against its CRC-32 (a mismatch is written once more, then
    :class:`VerifyError`); finally the recurrent state is reset (``reset``). ``progress(done, total)``
    is called with byte counts as WRITEs are acknowledged. Returns an :class:`UploadReport`.
    """
    info = device.info()
    header, placements = check_image(info, image, memory_map)
    total = sum(len(pl.data) for pl in placements)
    done = 0
    start = time.monotonic()

    def advance(n):
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    if progress is not None:
        progress(0, total)
    for pl in placements:
        device.write(pl.region, pl.offset, pl.data, progress=advance)
    rewritten = 0
    if verify:
        for pl in placements:
            want = zlib.crc32(pl.data)
            if device.verify(pl.region, pl.offset, len(pl.data)) == want:
                continue
            rewritten += 1
            device.write(pl.region, pl.offset, pl.data)
            got = device.verify(pl.region, pl.offset, len(pl.data))
            if got != want:
                raise VerifyError(f"{pl.name}: device memory CRC 0x{got:08x} after writing twice, "
                                  f"expected 0x{want:08x}")
    if reset:
        device.reset_state()
    return UploadReport(total, time.monotonic() - start, placements, rewritten)
