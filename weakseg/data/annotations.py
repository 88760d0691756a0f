"""PASCAL VOC XML annotations: a strict parser and a writer that the parser reads back.

VOC boxes are inclusive pixel coordinates, 1-based in the official data; 0 is tolerated because many
VOC-format exporters write 0-based boxes. A box must satisfy 0 <= min <= max <= size.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from weakseg.errors import DataError


@dataclass(frozen=True)
class ObjectBox:
    """One annotated object: class name and inclusive box corners in pixels."""

    name: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int
    difficult: bool = False
    truncated: bool = False
    pose: str = "Unspecified"

    @property
    def xyxy(self) -> tuple[int, int, int, int]:
        """The box as (xmin, ymin, xmax, ymax)."""
        return (self.xmin, self.ymin, self.xmax, self.ymax)


@dataclass
class Annotation:
    """The contents of one VOC XML file."""

    filename: str
    width: int
    height: int
    depth: int = 3
    segmented: bool = False
    objects: list[ObjectBox] = field(default_factory=list)
    folder: str = "VOC2012"


def _text(elem: ET.Element, tag: str, source: str, default: str | None = None) -> str:
    """The stripped text of a direct child; DataError if missing and no default is given."""
    child = elem.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if default is not None:
            return default
        raise DataError(f"{source}: missing <{tag}> in <{elem.tag}>")
    return child.text.strip()


def _int(elem: ET.Element, tag: str, source: str, default: str | None = None) -> int:
    """A direct child's text as an integer (an integral float such as '12.0' is accepted)."""
    text = _text(elem, tag, source, default)
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if value != value or value != int(value):
        raise DataError(f"{source}: <{tag}> is not an integer: {text!r}")
    return int(value)


def _flag(elem: ET.Element, tag: str, source: str) -> bool:
    """A 0/1 child (absent means 0)."""
    value = _int(elem, tag, source, default="0")
    if value not in (0, 1):
        raise DataError(f"{source}: <{tag}> must be 0 or 1, got {value}")
    return bool(value)


def _parse_object(obj: ET.Element, width: int, height: int, source: str) -> ObjectBox:
    """Parse one <object>, checking the box lies inside the image."""
    name = _text(obj, "name", source)
    bnd = obj.find("bndbox")
    if bnd is None:
        raise DataError(f"{source}: object {name!r} has no <bndbox>")
    xmin, ymin = _int(bnd, "xmin", source), _int(bnd, "ymin", source)
    xmax, ymax = _int(bnd, "xmax", source), _int(bnd, "ymax", source)
    if not (0 <= xmin <= xmax <= width and 0 <= ymin <= ymax <= height):
        raise DataError(
            f"{source}: box of {name!r} ({xmin},{ymin},{xmax},{ymax}) is inverted or outside the {width}x{height} image"
        )
    return ObjectBox(
        name=name,
        xmin=xmin,
        ymin=ymin,
        xmax=xmax,
        ymax=ymax,
        difficult=_flag(obj, "difficult", source),
        truncated=_flag(obj, "truncated", source),
        pose=_text(obj, "pose", source, default="Unspecified"),
    )


def parse_voc_xml_string(text: str | bytes, source: str = "<string>") -> Annotation:
    """Parse VOC XML text; `source` names the file in every DataError."""
    head = text[:4096] if isinstance(text, str) else text[:4096].decode("latin-1")
    if "<!DOCTYPE" in head or "<!ENTITY" in head:
        raise DataError(f"{source}: DOCTYPE/ENTITY declarations are not allowed in a VOC annotation")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise DataError(f"{source}: malformed XML ({e})") from e
    if root.tag != "annotation":
        raise DataError(f"{source}: root element is <{root.tag}>, expected <annotation>")
    size = root.find("size")
    if size is None:
        raise DataError(f"{source}: missing <size>")
    width, height = _int(size, "width", source), _int(size, "height", source)
    depth = _int(size, "depth", source, default="3")
    if width <= 0 or height <= 0:
        raise DataError(f"{source}: image size must be positive, got {width}x{height}")
    return Annotation(
        filename=_text(root, "filename", source),
        width=width,
        height=height,
        depth=depth,
        segmented=_flag(root, "segmented", source),
        objects=[_parse_object(obj, width, height, source) for obj in root.findall("object")],
        folder=_text(root, "folder", source, default="VOC2012"),
    )


def parse_voc_xml(path: str | os.PathLike) -> Annotation:
    """Parse a VOC XML annotation file; DataError names the file for any defect."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise DataError(f"{path}: annotation file not found") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read annotation ({e.strerror})") from e
    return parse_voc_xml_string(data, source=str(path))


def _sub(parent: ET.Element, tag: str, text: object) -> ET.Element:
    """Append a child element with text."""
    child = ET.SubElement(parent, tag)
    child.text = str(text)
    return child


def write_voc_xml(annotation: Annotation) -> str:
    """Serialise an Annotation as VOC-style XML text (tab-indented, as in the official files)."""
    root = ET.Element("annotation")
    _sub(root, "folder", annotation.folder)
    _sub(root, "filename", annotation.filename)
    size = ET.SubElement(root, "size")
    _sub(size, "width", annotation.width)
    _sub(size, "height", annotation.height)
    _sub(size, "depth", annotation.depth)
    _sub(root, "segmented", int(annotation.segmented))
    for box in annotation.objects:
        obj = ET.SubElement(root, "object")
        _sub(obj, "name", box.name)
        _sub(obj, "pose", box.pose)
        _sub(obj, "truncated", int(box.truncated))
        _sub(obj, "difficult", int(box.difficult))
        bnd = ET.SubElement(obj, "bndbox")
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            _sub(bnd, tag, getattr(box, tag))
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode") + "\n"
