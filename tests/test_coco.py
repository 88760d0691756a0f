"""COCO reader on the real samples: boxes of 100 VOC images in COCO format and 6 real COCO polygons."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from weakseg.data.coco import (
    CocoDataset,
    box_to_mask,
    counts_to_rle_string,
    polygons_to_mask,
    read_annotation_list,
    rle_decode,
    rle_encode,
    rle_string_to_counts,
)
from weakseg.data.classes import VOC_CLASSES
from weakseg.data.voc import VOCDataset
from weakseg.errors import DataError
from tests.shared_data import VOC_SAMPLE, COCO_SAMPLE

SAMPLE = COCO_SAMPLE
VOC100 = SAMPLE / "voc100_boxes_coco_format" / "instances_v2.json"
VOC34 = SAMPLE / "voc100_boxes_coco_format" / "instances_v2_subset34.json"
HF = SAMPLE / "hf_transformers_coco_39769"
VOC = VOC_SAMPLE

# A compressed RLE string produced by pycocotools (size [50, 70]), quoted in armengot/COCOtoolsFORK's README.
PYCOCOTOOLS_RLE = (
    "0g05b08J4M2N2NA^O1`0OCO=0E090H080IO68DH;>@C>a0_O_O`0j0OWOF<:CM72I24NL43JM92FN;1ENKO72L0LO91J0MO92INO0NO122OO"
    "0M031O000NO31OO11MO40N011MO41MO21L06OL021L06OL021L06OL021L060J040L060J040L060J040L060J040L060J040L060J040L060KO"
    "31L060KO31L06OL021L06OL021L06OL021MO41MO21MO40N100NO310O00M0310O00NO1220NO92IONO91KOMO72M0<1EO:2GN63KM34OLM73JF"
    "<;=1G_O_Ob0=AC`07EH=1IO71H090F0:1DO>1_O1b0>2N2N3L6H]O"
)


def test_voc100_file() -> None:
    ds = CocoDataset(VOC100)
    assert len(ds) == 100 and sum(len(ds.annotations(i)) for i in ds.image_ids) == 273
    assert sorted(ds.categories.values()) == sorted(VOC_CLASSES)
    first = ds.annotations(ds.image_ids[0])[0]
    assert ds.images[first.image_id].file_name == "2007_000027.jpg"
    assert first.bbox == (174.0, 101.0, 175.0, 250.0) and first.xyxy == (174.0, 101.0, 349.0, 351.0)
    assert ds.categories[first.category_id] == "person" and not first.iscrowd
    for image_id in ds.image_ids:
        info = ds.images[image_id]
        for ann in ds.annotations(image_id):
            x0, y0, x1, y1 = ann.xyxy
            assert 0 <= x0 <= x1 <= info.width and 0 <= y0 <= y1 <= info.height
            assert ann.area == pytest.approx(ann.bbox[2] * ann.bbox[3])
            mask = ds.mask(ann)  # the "polygon" is the box rectangle
            assert mask.shape == (info.height, info.width)
            assert mask.sum() == pytest.approx(ann.area, rel=0.01)
            assert mask.sum() == box_to_mask(ann.bbox, info.height, info.width).sum()


def test_subset34_matches_the_voc_xml_boxes() -> None:
    coco = CocoDataset(VOC34, image_root=VOC / "JPEGImages")
    voc = VOCDataset(VOC, VOC / "ImageSets/Segmentation/trainval.txt")
    assert len(coco) == 34
    assert {Path(im.file_name).stem for im in coco.images.values()} == {p.stem for p in (VOC / "Annotations").glob("*.xml")}
    for image_id, info in coco.images.items():
        stem = Path(info.file_name).stem
        xml = voc.annotation(stem)
        assert (info.width, info.height) == (xml.width, xml.height)
        from_coco = sorted((coco.categories[a.category_id], *map(int, a.xyxy)) for a in coco.annotations(image_id))
        from_xml = sorted((b.name, *b.xyxy) for b in xml.objects)
        assert from_coco == from_xml, stem  # COCO x+w == VOC xmax in this conversion
    some = coco.image_by_name("2007_000032")
    assert coco.image(some.id).shape == (281, 500, 3)
    assert coco.category_names(some.id) == ["aeroplane", "person"]


def test_real_coco_polygons_match_their_area() -> None:
    from PIL import Image

    anns = read_annotation_list(HF / "coco_annotations.txt")
    with Image.open(HF / "000000039769.png") as im:
        width, height = im.size
    assert (width, height) == (640, 480) and len(anns) == 6
    assert {a.image_id for a in anns} == {39769}
    assert sorted(a.category_id for a in anns) == [17, 17, 63, 65, 75, 75]  # cats, remotes, couch, bed
    for ann in anns:
        assert isinstance(ann.segmentation, list) and not ann.iscrowd
        mask = polygons_to_mask(ann.segmentation, height, width)
        assert mask.sum() == pytest.approx(ann.area, rel=0.025), ann.id  # worst case (smallest remote): ~1.7%
        rows, cols = np.nonzero(mask)
        x0, y0, x1, y1 = ann.xyxy
        assert abs(cols.min() - x0) <= 1 and abs(cols.max() + 1 - x1) <= 1, ann.id
        assert abs(rows.min() - y0) <= 1 and abs(rows.max() + 1 - y1) <= 1, ann.id


def test_full_dataset_built_around_the_real_annotations(tmp_path: Path) -> None:
    raw = json.loads((HF / "coco_annotations.txt").read_text())
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({
        "images": [{"id": 39769, "file_name": "000000039769.png", "width": 640, "height": 480}],
        "categories": [{"id": 17, "name": "cat"}, {"id": 63, "name": "couch"}, {"id": 65, "name": "bed"},
                       {"id": 75, "name": "remote"}],
        "annotations": raw,
    }))
    ds = CocoDataset(path, image_root=HF)
    assert ds.image(39769).shape == (480, 640, 3)
    assert ds.category_names(39769) == ["bed", "cat", "couch", "remote"]
    cats = [a for a in ds.annotations(39769) if a.category_id == 17]
    masks = [ds.mask(a) for a in cats]
    assert not (masks[0] & masks[1]).any()  # the two cats do not overlap


def test_uncompressed_rle_round_trip() -> None:
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (5, 7), (32, 17)]:
        for first in (False, True):
            mask = rng.random(shape) < 0.4
            mask.flat[0] = first
            rle = rle_encode(mask)
            assert rle["size"] == list(shape) and sum(rle["counts"]) == mask.size
            assert (rle["counts"][0] == 0) == first
            np.testing.assert_array_equal(rle_decode(rle), mask)


def test_rle_is_column_major() -> None:
    # 2x3 mask, column-major flattening [0,0,1,1,1,0]: counts [2, 3, 1]
    mask = rle_decode({"size": [2, 3], "counts": [2, 3, 1]})
    np.testing.assert_array_equal(mask, [[False, True, True], [False, True, False]])


def test_compressed_rle_string_from_pycocotools() -> None:
    counts = rle_string_to_counts(PYCOCOTOOLS_RLE)
    assert sum(counts) == 50 * 70 and min(counts) >= 0
    assert counts_to_rle_string(counts) == PYCOCOTOOLS_RLE  # the encoding is canonical
    mask = rle_decode({"size": [50, 70], "counts": PYCOCOTOOLS_RLE})
    assert mask.shape == (50, 70)
    assert mask[0].all() and mask[-1].all() and 0 < mask.sum() < mask.size
    np.testing.assert_array_equal(rle_decode(rle_encode(mask)), mask)


def test_compressed_rle_round_trip_with_large_and_negative_deltas() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        counts = rng.integers(0, 5000, size=rng.integers(1, 30)).tolist()
        assert rle_string_to_counts(counts_to_rle_string(counts)) == counts
    mask = np.zeros((300, 400), bool)
    mask[10:290, 5:6] = True
    mask[0:3, 100:390] = True
    text = counts_to_rle_string(rle_encode(mask)["counts"])
    np.testing.assert_array_equal(rle_decode({"size": [300, 400], "counts": text}), mask)
    np.testing.assert_array_equal(rle_decode({"size": [300, 400], "counts": text.encode()}), mask)


@pytest.mark.parametrize("rle,message", [
    ({"size": [2, 2], "counts": [1, 2]}, "sum to 3"),
    ({"size": [2, 2], "counts": "~~"}, "invalid RLE character"),
    ({"size": [2, 2], "counts": "o"}, "truncated RLE string"),
    ({"counts": [4]}, "invalid RLE"),
])
def test_bad_rle(rle: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rle_decode(rle)


def test_polygon_rasterisation_basics() -> None:
    square = [[2, 2, 6, 2, 6, 6, 2, 6]]
    mask = polygons_to_mask(square, 10, 10)
    assert mask.sum() == 16 and mask[2:6, 2:6].all()
    two = polygons_to_mask(square + [[7, 7, 9, 7, 9, 9]], 10, 10)
    # a right triangle of area 2: one full pixel and two exactly half-covered ones (ties count as inside)
    assert two.sum() == 16 + 3 and two[7, 7] and two[7, 8] and two[8, 8] and not two[8, 7]
    assert not polygons_to_mask([[1, 1, 2, 2]], 10, 10).any()  # degenerate (fewer than 3 points)
    assert polygons_to_mask([[-5, -5, 20, -5, 20, 20, -5, 20]], 10, 10).all()  # clipped to the image


def coco_file(tmp_path: Path, **changes) -> Path:
    """A tiny COCO file with one crowd RLE annotation and one polygon."""
    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:5] = True
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 6, "height": 4}],
        "categories": [{"id": 3, "name": "car"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "bbox": [2, 1, 3, 2], "area": 6, "iscrowd": 1,
             "segmentation": {"size": [4, 6], "counts": counts_to_rle_string(rle_encode(mask)["counts"])}},
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0,
             "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]},
            {"id": 12, "image_id": 1, "category_id": 3, "bbox": [4, 0, 2, 1], "area": 2, "iscrowd": 0},
        ],
    }
    data.update(changes)
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_rle_and_polygon_and_box_annotations(tmp_path: Path) -> None:
    ds = CocoDataset(coco_file(tmp_path))
    crowd, poly, box = ds.annotations(1)
    assert crowd.iscrowd and isinstance(crowd.segmentation, dict)
    assert ds.mask(crowd).sum() == 6 and ds.mask(crowd)[1:3, 2:5].all()
    assert ds.mask(poly).sum() == 4 and ds.mask(poly)[:2, :2].all()
    assert not box.has_mask and ds.mask(box).sum() == 2 and ds.mask(box)[0, 4:6].all()
    assert box.xyxy == (4.0, 0.0, 6.0, 1.0)
    with pytest.raises(DataError, match="no image_root given"):
        ds.image(1)


def test_bad_coco_files(tmp_path: Path) -> None:
    bad_json = tmp_path / "x.json"
    bad_json.write_text("{")
    with pytest.raises(DataError, match="x.json: not valid JSON"):
        CocoDataset(bad_json)
    with pytest.raises(DataError, match="file not found"):
        CocoDataset(tmp_path / "none.json")
    with pytest.raises(DataError, match="not a COCO instances file"):
        CocoDataset(coco_file(tmp_path, images=None))
    ann = {"id": 5, "image_id": 99, "category_id": 3, "bbox": [0, 0, 1, 1]}
    with pytest.raises(DataError, match="annotation 5 refers to unknown image 99"):
        CocoDataset(coco_file(tmp_path, annotations=[ann]))
    with pytest.raises(DataError, match="annotation 5 has unknown category 4"):
        CocoDataset(coco_file(tmp_path, annotations=[{**ann, "image_id": 1, "category_id": 4}]))
    with pytest.raises(DataError, match=r"annotation 5: ValueError: bbox must be"):
        CocoDataset(coco_file(tmp_path, annotations=[{**ann, "image_id": 1, "bbox": [0, 0, -1, 1]}]))
    with pytest.raises(DataError, match=r"annotation 5: KeyError"):
        CocoDataset(coco_file(tmp_path, annotations=[{"id": 5, "image_id": 1, "bbox": [0, 0, 1, 1]}]))
    rle = {"size": [5, 5], "counts": [25]}
    ds = CocoDataset(coco_file(tmp_path, annotations=[{**ann, "image_id": 1, "segmentation": rle}]))
    with pytest.raises(DataError, match=r"annotation 5: RLE size \[5, 5\] differs from the image size \[4, 6\]"):
        ds.mask(ds.annotations(1)[0])
