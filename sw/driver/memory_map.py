"""Where a weight image goes in a device's memory: the interface between an image and the regions.

The protocol knows only numbered, byte-addressed memory regions whose sizes (and four-byte tags) INFO
reports. A :class:`MemoryMap` says which parts of an image go to which region at which offset. The
accelerator's memory-map module provides the map of the hardware; :data:`DEFAULT_MAP` is the map of
the golden board: the whole image file, as it is, at offset 0 of region 0 (tag ``IMG``).
:class:`AcceleratorMap` is the map of the accelerator (:mod:`mmfree.memory_map`), and
:func:`memory_map_for` picks the map a device's INFO asks for.
"""

from dataclasses import dataclass

from .errors import IncompatibleImage

__all__ = ["Placement", "MemoryMap", "WholeImageMap", "AcceleratorMap", "DEFAULT_MAP", "memory_map_for"]


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


class AcceleratorMap(MemoryMap):
    """The accelerator's four regions (:mod:`mmfree.memory_map`): the image is decoded and laid out
    for a device with ``lanes`` ternary lanes in each of its ``rows`` row units."""

    def __init__(self, lanes, rows=1):
        from .. import memory_map as mm
        self.lanes = lanes
        self.rows = rows
        self.regions = dict(mm.REGION_TAGS)

    def place(self, image, header, sections):
        from .. import memory_map as mm
        from ..image import read_image
        try:
            regions = mm.to_regions(read_image(image), self.lanes, self.rows)
        except mm.MemoryMapError as e:
            raise IncompatibleImage(f"the model does not fit the device: {e}") from None
        return [Placement(mm.REGION_NAMES[rid], rid, 0, data) for rid, data in sorted(regions.items())]

    def __repr__(self):
        return f"AcceleratorMap(lanes={self.lanes}, rows={self.rows})"


def memory_map_for(info):
    """The :class:`MemoryMap` a device's INFO describes, by its region tags."""
    from .. import memory_map as mm
    tags = [r.tag.rstrip(b"\0") for r in info.regions]
    if tags[:len(mm.REGION_TAGS)] == [mm.REGION_TAGS[i] for i in range(len(mm.REGION_TAGS))]:
        return AcceleratorMap(info.lanes, info.rows)
    if tags and tags[0] == b"IMG":
        return DEFAULT_MAP
    names = ", ".join(t.decode("ascii", "replace") for t in tags) or "none"
    raise IncompatibleImage(f"the device's memory regions ({names}) match no known memory map")
