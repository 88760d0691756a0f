"""VOCDataset and the VOC XML parser/writer, on the real 34-image VOC 2012 sample and broken tmp copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from weakseg.data.annotations import Annotation, ObjectBox, parse_voc_xml, parse_voc_xml_string, write_voc_xml
from weakseg.data.classes import VOC_CLASSES, voc_palette
from weakseg.data.cls_labels import lookup_cls_labels, load_cls_labels
from weakseg.data.voc import VOCDataset, read_id_list
from weakseg.errors import DataError
from tests.shared_data import VOC_SAMPLE, IRN_LISTS

VOC = VOC_SAMPLE
CLS_LABELS = IRN_LISTS / "cls_labels.npy"
UNSEGMENTED = {"2007_000027", "2007_000423"}


def all_ids() -> list[str]:
    """Every id with an XML in the sample (34, including the two unsegmented ones)."""
    return sorted(p.stem for p in (VOC / "Annotations").glob("*.xml"))


@pytest.fixture
def all_list(tmp_path: Path) -> Path:
    """A list file naming all 34 sample ids."""
    path = tmp_path / "all.txt"
    path.write_text("\n".join(all_ids()) + "\n")
    return path


def small_copy(tmp_path: Path, ids: list[str], split: str = "train") -> Path:
    """Copy a few ids of the sample (image, XML, mask) into a fresh VOC2012 folder with one split."""
    root = tmp_path / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in ids:
        shutil.copy(VOC / "JPEGImages" / f"{i}.jpg", root / "JPEGImages")
        shutil.copy(VOC / "Annotations" / f"{i}.xml", root / "Annotations")
        if (VOC / "SegmentationClass" / f"{i}.png").exists():
            shutil.copy(VOC / "SegmentationClass" / f"{i}.png", root / "SegmentationClass")
    (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


# -- the real sample ------------------------------------------------------------------------------------

@pytest.mark.parametrize("split,count", [("train", 20), ("val", 12), ("trainval", 32)])
def test_split_ids_match_list_files(split: str, count: int) -> None:
    ds = VOCDataset(VOC, split)
    listed = [l.strip() for l in (VOC / "ImageSets/Segmentation" / f"{split}.txt").read_text().splitlines() if l.strip()]
    assert ds.ids == listed and len(ds) == count
    assert ds.classes == list(VOC_CLASSES)
    assert not UNSEGMENTED & set(ds.ids)


def test_trainval_is_train_plus_val() -> None:
    train, val, trainval = (set(VOCDataset(VOC, s).ids) for s in ("train", "val", "trainval"))
    assert train | val == trainval and not train & val


def test_split_may_be_a_list_path(all_list: Path) -> None:
    ds = VOCDataset(VOC, all_list)
    assert ds.ids == all_ids() and len(ds) == 34
    assert VOCDataset(VOC, str(all_list)).ids == ds.ids


def test_images_decode_at_the_xml_size(all_list: Path) -> None:
    ds = VOCDataset(VOC, all_list)
    for i in ds.ids:
        img = ds.image(i)
        ann = ds.annotation(i)
        assert img.dtype == np.uint8 and img.shape == (ann.height, ann.width, 3), i
        assert ann.filename == f"{i}.jpg"
        assert ds.image_size(i) == (ann.height, ann.width)


def test_masks_are_palette_pngs_in_range_and_image_sized() -> None:
    ds = VOCDataset(VOC, "trainval")
    palette = voc_palette()
    for i in ds.ids:
        with Image.open(ds.mask_path(i)) as im:
            assert im.mode == "P"
            assert im.getpalette()[: 21 * 3] == palette[: 21 * 3]
        mask = ds.mask(i)
        assert mask.dtype == np.uint8 and mask.shape == ds.image_size(i)
        values = set(np.unique(mask).tolist())
        assert values <= set(range(21)) | {255}, i
        assert 0 in values and 255 in values  # real masks have background and a void boundary


def test_unsegmented_images_have_no_mask_and_are_flagged(all_list: Path) -> None:
    ds = VOCDataset(VOC, all_list)
    for i in UNSEGMENTED:
        assert ds.mask(i) is None and not ds.annotation(i).segmented
        assert ds.labels(i).sum() == 1 and ds.label_ids(i) == [VOC_CLASSES.index("person") + 1]
    assert all(ds.annotation(i).segmented for i in VOCDataset(VOC, "trainval").ids)


def test_no_instance_masks_in_the_sample() -> None:
    ds = VOCDataset(VOC, "train")
    assert ds.instance_mask(ds.ids[0]) is None


def test_xml_labels_equal_mask_classes_on_real_data() -> None:
    # Verified on all 32 segmented sample images: every XML object class (including classes present
    # only as difficult objects, in 7 images) has pixels in the mask, and vice versa.
    ds = VOCDataset(VOC, "trainval")
    for i in ds.ids:
        labels = ds.labels(i)
        assert labels.dtype == np.float32 and labels.shape == (20,)
        mask_classes = sorted(set(np.unique(ds.mask(i)).tolist()) - {0, 255})
        assert ds.label_ids(i) == mask_classes, i
        assert [c + 1 for c in np.flatnonzero(labels)] == mask_classes


def test_difficult_objects_count_towards_labels() -> None:
    # In 2007_000648 aeroplane, car and person appear only as difficult objects, yet have mask pixels
    # and are set in cls_labels.npy: image-level labels include difficult objects.
    ds = VOCDataset(VOC, "trainval")
    boxes = ds.boxes("2007_000648")
    only_difficult = {b.name for b in boxes if b.difficult} - {b.name for b in boxes if not b.difficult}
    assert only_difficult == {"aeroplane", "car", "person"}
    assert {VOC_CLASSES[i - 1] for i in ds.label_ids("2007_000648")} >= only_difficult
    assert set(ds.label_ids("2007_000648")) == set(np.unique(ds.mask("2007_000648")).tolist()) - {0, 255}


def test_boxes_of_2007_000032() -> None:
    boxes = VOCDataset(VOC, "train").boxes("2007_000032")
    assert [b.name for b in boxes] == ["aeroplane", "aeroplane", "person", "person"]
    assert boxes[0] == ObjectBox("aeroplane", 104, 78, 375, 183, difficult=False, truncated=False, pose="Frontal")
    assert boxes[2].xyxy == (195, 180, 213, 229) and boxes[2].pose == "Rear"


def test_cls_labels_agree_with_xml_labels() -> None:
    xml = VOCDataset(VOC, "trainval")
    npy = VOCDataset(VOC, "trainval", labels=CLS_LABELS)
    table = load_cls_labels(CLS_LABELS)
    shared = [i for i in xml.ids if lookup_cls_labels(table, i) is not None]
    assert len(shared) == 32  # every segmented sample image is in cls_labels.npy
    for i in shared:
        np.testing.assert_array_equal(npy.labels(i), xml.labels(i), err_msg=i)
        assert npy.label_ids(i) == xml.label_ids(i)


def test_cls_labels_missing_id_is_a_data_error(all_list: Path) -> None:
    ds = VOCDataset(VOC, all_list, labels=CLS_LABELS)
    with pytest.raises(DataError, match=r"cls_labels\.npy: no labels for image '2007_000027'"):
        ds.labels("2007_000027")


def test_labels_auto(tmp_path: Path) -> None:
    root = small_copy(tmp_path, ["2007_000032", "2007_000039"])
    assert VOCDataset(root, "train", labels="auto").labels_path is None
    table_path = root / "cls_labels.npy"
    from weakseg.data.cls_labels import save_cls_labels

    fake = np.zeros(20, np.float32)
    fake[0] = 1
    save_cls_labels(table_path, {2007000032: fake, 2007000039: fake})
    ds = VOCDataset(root, "train", labels="auto")
    assert ds.labels_path == table_path
    assert ds.label_ids("2007_000039") == [1]  # from the npy, not the XML (tvmonitor)


def test_construction_is_lazy(tmp_path: Path) -> None:
    root = small_copy(tmp_path, ["2007_000032"])
    (root / "JPEGImages/2007_000032.jpg").write_bytes(b"not a jpeg")
    (root / "Annotations/2007_000032.xml").write_text("<annotation>")
    ds = VOCDataset(root, "train")  # nothing decoded yet
    assert ds.ids == ["2007_000032"]
    with pytest.raises(DataError):
        ds.image("2007_000032")


def test_custom_classes_txt(tmp_path: Path) -> None:
    root = small_copy(tmp_path, ["2007_000032"])
    (root / "classes.txt").write_text("person\naeroplane\n")
    ds = VOCDataset(root, "train")
    assert ds.classes == ["person", "aeroplane"]
    np.testing.assert_array_equal(ds.labels("2007_000032"), [1.0, 1.0])
    with pytest.raises(DataError, match=r"mask values \[15\] exceed the 2 classes"):
        ds.mask("2007_000032")  # the real mask uses VOC's 20-class values


def test_png_image_fallback(tmp_path: Path) -> None:
    root = small_copy(tmp_path, ["2007_000039"])
    jpg = root / "JPEGImages/2007_000039.jpg"
    rgb = np.asarray(Image.open(jpg).convert("RGB"))
    Image.fromarray(rgb).save(jpg.with_suffix(".png"))
    jpg.unlink()
    ds = VOCDataset(root, "train")
    assert ds.image_path("2007_000039").suffix == ".png"
    np.testing.assert_array_equal(ds.image("2007_000039"), rgb)
    assert ds.validate() == ["2007_000039"]


def test_instance_mask_read_and_size_checked(tmp_path: Path) -> None:
    root = small_copy(tmp_path, ["2007_000039"])
    h, w = VOCDataset(root, "train").image_size("2007_000039")
    inst = np.zeros((h, w), np.uint8)
    inst[10:20, 10:30] = 1
    (root / "SegmentationObject").mkdir()
    Image.fromarray(inst).save(root / "SegmentationObject/2007_000039.png")
    np.testing.assert_array_equal(VOCDataset(root, "train").instance_mask("2007_000039"), inst)
    Image.fromarray(inst[:-1]).save(root / "SegmentationObject/2007_000039.png")
    with pytest.raises(DataError, match="SegmentationObject/2007_000039.png: mask is"):
        VOCDataset(root, "train").instance_mask("2007_000039")


def test_iteration_yields_samples(tmp_path: Path) -> None:
    root = small_copy(tmp_path, ["2007_000032", "2007_000027"])
    samples = list(VOCDataset(root, "train"))
    assert [s.id for s in samples] == ["2007_000032", "2007_000027"]
    assert samples[0].mask is not None and samples[1].mask is None
    assert samples[0].image.shape[:2] == samples[0].mask.shape


# -- error cases ----------------------------------------------------------------------------------------

def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="VOC root folder not found") as e:
        VOCDataset(tmp_path / "nope", "train")
    assert str(e.value).startswith(str(tmp_path / "nope"))


def test_root_one_level_too_high_gets_a_hint() -> None:
    with pytest.raises(DataError, match=r"not a VOC2012 folder, it has no JPEGImages/ \(did you mean .*VOCdevkit/VOC2012\?\)"):
        VOCDataset(VOC.parent, "train")
    with pytest.raises(DataError, match=r"did you mean .*VOCdevkit/VOC2012\?"):
        VOCDataset(VOC.parent.parent, "train")


def test_missing_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"split 'bogus' not found \(available: train, trainval, val\)") as e:
        VOCDataset(VOC, "bogus")
    assert str(e.value).startswith(str(VOC / "ImageSets/Segmentation/bogus.txt"))
    with pytest.raises(DataError, match="split list not found"):
        VOCDataset(VOC, tmp_path / "none.txt")


def test_bad_split_lists(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="empty.txt: split list is empty"):
        read_id_list(empty)
    evil = tmp_path / "evil.txt"
    evil.write_text("2007_000032\n../../etc/passwd x\n")
    assert read_id_list(evil) == ["2007_000032", "passwd"]  # a path token is reduced to its stem
    evil.write_text("..\n")
    with pytest.raises(DataError, match="evil.txt: line 1: invalid image id"):
        read_id_list(evil)
    paths = tmp_path / "paths.txt"
    paths.write_text("/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n")
    assert read_id_list(paths) == ["2007_000032"]


def test_malformed_xml(tmp_path: Path) -> None:
    root = small_copy(tmp_path, ["2007_000032"])
    xml = root / "Annotations/2007_000032.xml"
    xml.write_text(xml.read_text()[:300])
    ds = VOCDataset(root, "train")
    with pytest.raises(DataError, match="malformed XML") as e:
        ds.labels("2007_000032")
    assert str(e.value).startswith(str(xml)) and "\n" not in str(e.value)


def test_missing_annotation_file(tmp_path: Path) -> None:
    root = small_copy(tmp_path, ["2007_000032"])
    (root / "Annotations/2007_000032.xml").unlink()
    with pytest.raises(DataError, match="2007_000032.xml: annotation file not found"):
        VOCDataset(root, "train").boxes("2007_000032")


def test_wrong_size_mask(tmp_path: Path) -> None:
    root = small_copy(tmp_path, ["2007_000032"])
    png = root / "SegmentationClass/2007_000032.png"
    with Image.open(png) as im:
        im.crop((0, 0, 100, 100)).save(png)
    ds = VOCDataset(root, "train")
    with pytest.raises(DataError, match=r"mask is 100x100 but the image is 500x281") as e:
        ds.mask("2007_000032")
    assert str(e.value).startswith(str(png))


def test_mask_value_out_of_range(tmp_path: Path) -> None:
    root = small_copy(tmp_path, ["2007_000032"])
    png = root / "SegmentationClass/2007_000032.png"
    with Image.open(png) as im:
        arr = np.array(im)
        palette = im.getpalette()
    arr[0, 0] = 42
    out = Image.fromarray(arr, mode="L").convert("P")
    out.putpalette(palette)
    out.save(png)
    with pytest.raises(DataError, match=r"mask values \[42\] exceed the 20 classes"):
        VOCDataset(root, "train").mask("2007_000032")


def test_unknown_class_name(tmp_path: Path) -> None:
    root = small_copy(tmp_path, ["2007_000032"])
    xml = root / "Annotations/2007_000032.xml"
    xml.write_text(xml.read_text().replace("<name>person</name>", "<name>unicorn</name>", 1))
    with pytest.raises(DataError, match="unknown class name 'unicorn'") as e:
        VOCDataset(root, "train").labels("2007_000032")
    assert str(e.value).startswith(str(xml))


def test_undecodable_image_raises_by_default_and_is_skipped_with_skip_bad(tmp_path: Path) -> None:
    ids = ["2007_000032", "2007_000039", "2007_000063"]
    root = small_copy(tmp_path, ids)
    (root / "JPEGImages/2007_000039.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    strict = VOCDataset(root, "train")
    with pytest.raises(DataError, match="2007_000039.jpg: image does not decode"):
        strict.validate()
    with pytest.raises(DataError, match="image does not decode"):
        list(strict)

    lenient = VOCDataset(root, "train", skip_bad=True)
    assert lenient.validate() == ["2007_000032", "2007_000063"]
    assert [b[0] for b in lenient.bad] == ["2007_000039"] and "does not decode" in lenient.bad[0][1]
    assert [s.id for s in lenient] == ["2007_000032", "2007_000063"]
    assert [b[0] for b in lenient.bad] == ["2007_000039"]


def test_skip_bad_collects_bad_annotations(tmp_path: Path) -> None:
    ids = ["2007_000032", "2007_000039", "2007_000063"]
    root = small_copy(tmp_path, ids)
    (root / "Annotations/2007_000032.xml").write_text("<annotation><size></annotation>")
    xml = root / "Annotations/2007_000063.xml"
    xml.write_text(xml.read_text().replace("<width>500</width>", "<width>400</width>"))
    ds = VOCDataset(root, "train", skip_bad=True)
    assert ds.validate() == ["2007_000039"]
    reasons = dict(ds.bad)
    assert "malformed XML" in reasons["2007_000032"]
    assert "outside the 400x375 image" in reasons["2007_000063"] or "says 400x375" in reasons["2007_000063"]


def test_image_size_disagreeing_with_xml(tmp_path: Path) -> None:
    root = small_copy(tmp_path, ["2007_000039"])
    xml = root / "Annotations/2007_000039.xml"
    xml.write_text(xml.read_text().replace("<height>375</height>", "<height>376</height>"))
    with pytest.raises(DataError, match=r"2007_000039.jpg: image is 500x375 but 2007_000039.xml says 500x376"):
        VOCDataset(root, "train").validate()


# -- the XML parser and writer --------------------------------------------------------------------------

def test_xml_round_trip_on_real_files() -> None:
    for path in sorted((VOC / "Annotations").glob("*.xml")):
        ann = parse_voc_xml(path)
        again = parse_voc_xml_string(write_voc_xml(ann))
        assert again == ann, path.name


def test_xml_round_trip_of_a_generated_annotation() -> None:
    ann = Annotation(filename="synth_0001.png", width=64, height=48, depth=3, segmented=True, objects=[
        ObjectBox("cat", 1, 2, 30, 40, difficult=True, truncated=False, pose="Left"),
        ObjectBox("a & <b>", 0, 0, 64, 48),
    ], folder="synth")
    text = write_voc_xml(ann)
    assert text.startswith("<annotation>\n\t<folder>synth</folder>") and "&amp;" in text
    assert parse_voc_xml_string(text) == ann


XML_HEAD = "<annotation><filename>x.jpg</filename><size><width>10</width><height>8</height><depth>3</depth></size>"


@pytest.mark.parametrize("body,message", [
    ("<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4.5</xmax><ymax>3</ymax></bndbox></object>",
     r"<xmax> is not an integer: '4.5'"),
    ("<object><name>cat</name><bndbox><xmin>a</xmin><ymin>1</ymin><xmax>4</xmax><ymax>3</ymax></bndbox></object>",
     r"<xmin> is not an integer: 'a'"),
    ("<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>11</xmax><ymax>3</ymax></bndbox></object>",
     r"box of 'cat' \(1,1,11,3\) is inverted or outside the 10x8 image"),
    ("<object><name>cat</name><bndbox><xmin>5</xmin><ymin>1</ymin><xmax>4</xmax><ymax>3</ymax></bndbox></object>",
     r"is inverted or outside"),
    ("<object><name>cat</name><bndbox><xmin>-1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>3</ymax></bndbox></object>",
     r"is inverted or outside"),
    ("<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax></bndbox></object>",
     r"missing <ymax> in <bndbox>"),
    ("<object><name>cat</name></object>", r"object 'cat' has no <bndbox>"),
    ("<object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>3</ymax></bndbox></object>",
     r"missing <name> in <object>"),
    ("<segmented>2</segmented>", r"<segmented> must be 0 or 1"),
])
def test_xml_errors(body: str, message: str) -> None:
    with pytest.raises(DataError, match=message) as e:
        parse_voc_xml_string(XML_HEAD + body + "</annotation>", source="/data/x.xml")
    assert str(e.value).startswith("/data/x.xml: ")


@pytest.mark.parametrize("text,message", [
    ("<annotation><filename>x.jpg</filename></annotation>", "missing <size>"),
    ("<annotation><size><width>10</width><height>8</height></size></annotation>", "missing <filename>"),
    ("<annotation><filename>x</filename><size><width>0</width><height>8</height></size></annotation>",
     "image size must be positive"),
    ("<notes/>", "root element is <notes>"),
    ("", "malformed XML"),
    ('<!DOCTYPE a [<!ENTITY e "xxxx">]><annotation>&e;</annotation>', "DOCTYPE/ENTITY declarations are not allowed"),
])
def test_xml_structure_errors(text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_voc_xml_string(text, source="x.xml")


def test_xml_defaults_and_integral_floats() -> None:
    ann = parse_voc_xml_string(XML_HEAD.replace("<depth>3</depth>", "") + "<object><name>cat</name><bndbox>"
                               "<xmin>1.0</xmin><ymin>1</ymin><xmax>4</xmax><ymax>3</ymax></bndbox></object></annotation>")
    assert ann.depth == 3 and not ann.segmented
    assert ann.objects == [ObjectBox("cat", 1, 1, 4, 3, difficult=False, truncated=False, pose="Unspecified")]
