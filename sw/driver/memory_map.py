"""Where a weight image goes in a device's memory: the interface between an image and the regions.

The protocol knows only numbered, byte-addressed memory regions whose sizes (and four-byte tags) INFO
reports. A :class:`MemoryMap` says which parts of an image go to which region at which offset. The
accelerator's memory-map module provides the map of the hardware; :data:`DEFAULT_MAP` is the map of
the golden board: the whole image file, as it is, at offset 0 of region 0 (tag ``IMG``).
"""

from dataclasses import dataclass

from .errors import IncompatibleImage

__all__ = ["Placement", "MemoryMap", "WholeImageMap", "DEFAULT_MAP"]


@dataclass(frozen=True)
class Placement:
    """``data`` (named ``name`` in messages) goes to ``region`` from byte ``offset``."""

    name: str
    region: int
    offset: int
    data: bytes

    @property
    def end(self):
        return self.offset + len(self.data)


class MemoryMap:
    """The placement of an image's contents in device memory regions.

    Subclasses set ``regions`` (region id -> expected tag, as INFO reports it) and implement
    :meth:`place`. :meth:`check` refuses a device whose regions do not match or are too small.
    """

    regions = {}

    def place(self, image, header, sections):
        """The :class:`Placement` list for an image: ``image`` its bytes, ``header`` and ``sections``
        as :func:`mmfree.image.parse_image` returns them."""
        raise NotImplementedError

    def check(self, info, placements):
        """Raise :class:`IncompatibleImage` unless every placement fits the regions ``info`` reports."""
        for rid, tag in self.regions.items():
            if rid >= len(info.regions):
                raise IncompatibleImage(f"the device has {len(info.regions)} memory regions; this memory "
                                        f"map needs region {rid} ({_name(tag)})")
            if info.regions[rid].tag.rstrip(b"\0") != tag.rstrip(b"\0"):
                raise IncompatibleImage(f"device region {rid} is {info.regions[rid].name!r}, this memory "
                                        f"map expects {_name(tag)!r}")
        for pl in placements:
            if pl.region >= len(info.regions):
                raise IncompatibleImage(f"{pl.name}: the device has no memory region {pl.region}")
            size = info.regions[pl.region].size
            if pl.end > size:
                raise IncompatibleImage(f"{pl.name} needs {pl.end} bytes of region {pl.region} "
                                        f"({info.regions[pl.region].name}); the device has {size}")


def _name(tag):
    return tag.rstrip(b"\0").decode("ascii", "replace")


class WholeImageMap(MemoryMap):
    """The whole image file at offset 0 of one region (what the golden board parses)."""

    def __init__(self, region=0, tag=b"IMG"):
        self.region = region
        self.tag = tag
        self.regions = {region: tag}

    def place(self, image, header, sections):
        return [Placement("image", self.region, 0, bytes(image))]

    def __repr__(self):
        return f"WholeImageMap(region={self.region}, tag={self.tag!r})"


DEFAULT_MAP = WholeImageMap()
