"""Detection over loopback gRPC: Detect on the embedded backend equals onnxruntime run directly (a Faster R-CNN's
boxes, a Mask R-CNN's masks), Explain with method bbam equals the library's BBAM on the checkpoint within the
server's limits, bad boxes are INVALID_ARGUMENT naming the box, the triton backend (here in front of weakseg's own
KServe v2 endpoint) serves Detect and answers bbam UNIMPLEMENTED, and `weakseg client detect|explain` write what
the server sends."""

import contextlib
import io
import json

import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from serving.api import segmentation_pb2 as pb
from serving.api import segmentation_pb2_grpc as pb_grpc
from serving.backends.embedded import EmbeddedBackend
from serving.explain import GradientLimits
from tests.detect_repo import CLASSES, build_detection_repo, ort_detect, scene
from tests.serving_repo import raw_image, running_server

LIMITS = GradientLimits(
    max_bbam_iterations=3, default_bbam_iterations=2, max_bbam_proposals=64, default_bbam_proposals=32, max_bbam_boxes=2
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    torch.set_num_threads(2)
    return build_detection_repo(tmp_path_factory.mktemp("detect_serving"))


@pytest.fixture(scope="module")
def server(repo):
    with running_server(EmbeddedBackend(repo, device="cpu", threads=1), gradients=LIMITS) as s:
        yield s


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield pb_grpc.SegmentationServiceStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def image():
    return scene(5, 64, 80)


def boxes_of(r) -> np.ndarray:
    return np.array([[d.box.x1, d.box.y1, d.box.x2, d.box.y2] for d in r.detections], dtype=np.float32).reshape(-1, 4)


def error_of(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        call(request)
    return e.value


def test_detect_equals_onnxruntime(stub, repo, image):
    ref = ort_detect(repo, "det", image)
    r = stub.Detect(pb.DetectRequest(model="det", image=raw_image(image), request_id="d-1"))
    assert (r.header.model, r.header.model_version, r.header.request_id, r.header.backend) == (
        "det",
        "1",
        "d-1",
        "embedded",
    )
    assert (r.height, r.width, r.has_masks) == (64, 80, False) and len(r.detections) == len(ref["boxes"]) > 0
    np.testing.assert_allclose(boxes_of(r), ref["boxes"], rtol=0, atol=1e-4)
    np.testing.assert_allclose([d.score for d in r.detections], ref["scores"], rtol=0, atol=1e-6)
    assert [d.class_id for d in r.detections] == ref["labels"].tolist()
    assert [d.label for d in r.detections] == [CLASSES[c - 1] for c in ref["labels"]]
    assert all(not d.mask_png and not d.mask_raw for d in r.detections)
    # min_score and max_detections narrow the same list, best first
    cut = float(np.median(ref["scores"]))
    narrowed = stub.Detect(pb.DetectRequest(model="det", image=raw_image(image), min_score=cut, max_detections=3))
    want = ref["scores"][ref["scores"] >= cut][:3]
    np.testing.assert_allclose([d.score for d in narrowed.detections], want, rtol=0, atol=1e-6)


def test_detect_instance_masks_equal_onnxruntime(stub, repo, image):
    ref = ort_detect(repo, "inst", image)
    encoded = io.BytesIO()
    Image.fromarray(image).save(encoded, format="PNG")
    r = stub.Detect(
        pb.DetectRequest(
            model="inst", image=pb.Image(encoded=encoded.getvalue()), mask_format=pb.MASK_FORMAT_PNG_AND_RAW
        )
    )
    assert r.has_masks and len(r.detections) == len(ref["boxes"]) > 0
    np.testing.assert_allclose(boxes_of(r), ref["boxes"], rtol=0, atol=1e-4)
    for d, probability in zip(r.detections, ref["masks"], strict=True):
        want = (probability > 0.5).astype(np.uint8)
        raw = np.frombuffer(d.mask_raw, np.uint8).reshape(64, 80)
        png = np.asarray(Image.open(io.BytesIO(d.mask_png)))
        assert np.mean(raw != want) < 1e-3  # onnxruntime run by the server vs here: the same graph and input
        np.testing.assert_array_equal(png, raw)
        assert d.mask_pixels == int(raw.sum())
    assert any(d.mask_pixels > 0 for d in r.detections)
    tighter = stub.Detect(
        pb.DetectRequest(
            model="inst", image=raw_image(image), mask_format=pb.MASK_FORMAT_RAW, mask_threshold=0.9, max_detections=2
        )
    )
    for d, probability in zip(tighter.detections, ref["masks"][:2], strict=True):
        assert not d.mask_png and d.mask_pixels == int((probability > 0.9).sum())
    boxes = stub.Detect(pb.DetectRequest(model="inst", image=raw_image(image), boxes_only=True))
    assert not boxes.has_masks and all(not d.mask_raw and not d.mask_png for d in boxes.detections)
    np.testing.assert_allclose(boxes_of(boxes), ref["boxes"], rtol=0, atol=1e-4)


def library_bbam(checkpoint, kind, image, boxes, labels, iterations, proposals, seed) -> tuple[np.ndarray, list[int]]:
    """BBAM's maps and positive counts from the source checkpoint (not the server's copy)."""
    from weakseg.attribution.bbam import BBAM
    from weakseg.export.detection import load_detection_model

    model, _ = load_detection_model(checkpoint, kind)
    x = torch.from_numpy(image).permute(2, 0, 1).float().div(255.0)
    result = BBAM(iterations=iterations, proposals=proposals).run(
        model, x, torch.as_tensor(boxes), torch.as_tensor(labels), seed
    )
    return result.maps.numpy(), result.positives


def bbam_request(model, image, boxes, labels, **fields) -> pb.ExplainRequest:
    targets = [
        pb.BoxTarget(box=pb.Box(x1=b[0], y1=b[1], x2=b[2], y2=b[3]), class_id=int(c))
        for b, c in zip(boxes, labels, strict=True)
    ]
    return pb.ExplainRequest(model=model, image=raw_image(image), method="bbam", boxes=targets, **fields)


@pytest.mark.parametrize(
    "name,kind,iterations,proposals",
    [("det", "detector", 3, 64), ("det", "detector", 0, 0), ("inst", "instance", 2, 16)],
)
def test_explain_bbam_equals_the_library_maps(stub, repo, image, name, kind, iterations, proposals):
    ref = ort_detect(repo, name, image)
    boxes, labels = ref["boxes"][:2], ref["labels"][:2]  # the detector's own top detections: positives exist
    r = stub.Explain(
        bbam_request(name, image, boxes, labels, bbam_iterations=iterations, bbam_proposals=proposals, bbam_seed=7)
    )
    assert r.method == "bbam" and (r.height, r.width) == (64, 80) and len(r.maps) == 2
    assert [m.class_id for m in r.maps] == labels.tolist() and [m.label for m in r.maps] == [
        CLASSES[c - 1] for c in labels
    ]
    got = np.stack([np.frombuffer(m.data, np.uint8).reshape(64, 80) for m in r.maps]).astype(int)
    # the server's defaults here: 2 iterations, 32 proposals
    want, positives = library_bbam(
        repo.parent / f"{name}.safetensors", kind, image, boxes, labels, iterations or 2, proposals or 32, 7
    )
    assert want.shape == (2, 64, 80) and want.min() >= 0 and want.max() <= 1
    assert np.abs(got - np.rint(want * 255).astype(int)).max() <= 1
    assert [m.positives for m in r.maps] == positives and sum(positives) > 0 and got.max() > 0
    assert all(min(abs(m.iou_threshold - t) for t in (0.9, 0.85, 0.8)) < 1e-6 for m in r.maps)  # the cascade's
    np.testing.assert_allclose(
        [[m.box.box.x1, m.box.box.y1, m.box.box.x2, m.box.box.y2] for m in r.maps], boxes, atol=1e-4
    )
    f16 = stub.Explain(
        bbam_request(
            name,
            image,
            boxes[:1],
            labels[:1],
            bbam_iterations=iterations,
            bbam_proposals=proposals,
            bbam_seed=7,
            map_format=pb.MAP_FORMAT_FLOAT16,
        )
    )
    maps16 = np.frombuffer(f16.maps[0].data, "<f2").reshape(64, 80)
    assert maps16.min() >= 0 and maps16.max() <= 1
    np.testing.assert_allclose(maps16, want[0], atol=2e-3)  # one box alone: the same map (boxes do not interact)


def test_bbam_limits_are_enforced_and_named(stub, repo, image):
    ref = ort_detect(repo, "det", image)
    box, label = ref["boxes"][:1], ref["labels"][:1]
    for fields, text in (
        ({"bbam_iterations": 4}, "bbam_iterations 4 exceeds this server's limit of 3"),
        ({"bbam_proposals": 65}, "bbam_proposals 65 exceeds this server's limit of 64"),
    ):
        e = error_of(stub.Explain, bbam_request("det", image, box, label, **fields))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and text in e.details()
    e = error_of(stub.Explain, bbam_request("det", image, np.repeat(box, 3, 0), np.repeat(label, 3)))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "3 boxes exceed this server's limit of 2" in e.details()
    e = error_of(stub.Explain, pb.ExplainRequest(model="det", image=raw_image(image), method="bbam"))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "needs boxes" in e.details()
    big = np.zeros((600, 600, 3), np.uint8)  # above the default 512 x 512 pixels of gradient methods
    e = error_of(stub.Explain, bbam_request("det", big, [[10, 10, 50, 50]], [1]))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most 262144 pixels" in e.details()


@pytest.mark.parametrize(
    "box,label,index,text",
    [
        ([50, 10, 90, 40], 1, 0, "box 0 (50, 10, 90, 40): extends outside the 80x64 image"),
        ([-1, 10, 20, 40], 2, 0, "box 0 (-1, 10, 20, 40): extends outside"),
        ([10, 10, 10.5, 40], 1, 0, "box 0 (10, 10, 10.5, 40): empty or degenerate"),
        ([30, 20, 10, 40], 1, 0, "box 0 (30, 20, 10, 40): empty or degenerate"),
        ([10, 10, 40, 40], 3, 1, "box 1 (10, 10, 40, 40): class id 3 is not in the detector (classes 1..2"),
        ([10, 10, 40, 40], 0, 1, "box 1 (10, 10, 40, 40): class id 0 is not in the detector"),
        ([float("nan"), 10, 40, 40], 1, 1, "box 1 (nan, 10, 40, 40): coordinates are not finite"),
    ],
)
def test_bad_boxes_are_invalid_argument_naming_the_box(stub, image, box, label, index, text):
    boxes, labels = [box], [label]
    if index == 1:  # the bad box second, after a good one
        boxes, labels = [[5, 5, 30, 30], box], [1, label]
    e = error_of(stub.Explain, bbam_request("det", image, boxes, labels))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and text in e.details(), e.details()


def test_bad_detect_and_explain_requests(stub, image):
    cases = [
        (stub.Detect, pb.DetectRequest(model="det", image=raw_image(image), min_score=1.5), "min_score must be"),
        (
            stub.Detect,
            pb.DetectRequest(model="inst", image=raw_image(image), mask_threshold=float("nan")),
            "mask_threshold must be",
        ),
        (stub.Detect, pb.DetectRequest(model="det"), "image is missing"),
        (stub.Detect, pb.DetectRequest(image=raw_image(image)), "model is empty"),
        (
            stub.Explain,
            pb.ExplainRequest(model="det", image=raw_image(image), method="gradcam"),
            "unknown method 'gradcam' for detector 'det'; choose from bbam",
        ),
        (
            stub.Explain,
            bbam_request("det", image, [[5, 5, 30, 30]], [1], target_classes=[1]),
            "target_classes are for classifiers",
        ),
        (stub.Overlay, pb.OverlayRequest(model="det", image=raw_image(image)), "is a detector"),
    ]
    for call, request, text in cases:
        e = error_of(call, request)
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and text in e.details(), (text, e.details())
    assert (
        error_of(stub.Detect, pb.DetectRequest(model="nope", image=raw_image(image))).code()
        == grpc.StatusCode.NOT_FOUND
    )


def test_list_models_names_kinds_unbatched_tensors_and_bbam(stub):
    by_name = {m.name: m for m in stub.ListModels(pb.ListModelsRequest()).models}
    det, inst = by_name["det"], by_name["inst"]
    assert (det.kind, inst.kind) == ("detector", "instance") and list(det.labels) == CLASSES
    assert list(det.methods) == ["bbam"] == list(inst.methods) and det.max_batch_size == 0
    assert [(t.name, t.datatype, list(t.shape)) for t in det.inputs] == [("pixels", "UINT8", [-1, -1, 3])]
    assert [(t.name, t.datatype, list(t.shape)) for t in inst.outputs] == [
        ("boxes", "FP32", [-1, 4]),
        ("scores", "FP32", [-1]),
        ("labels", "INT64", [-1]),
        ("masks", "FP32", [-1, -1, -1]),
    ]


def test_triton_backend_serves_detect_and_refuses_bbam(server, repo, image):
    """weakseg's KServe v2 endpoint stands in for Triton: the triton backend reads the catalogue from its repository
    index and model configs and runs ModelInfer there."""
    from serving.backends.triton import TritonBackend

    with (
        running_server(TritonBackend(f"127.0.0.1:{server.port}", timeout=60.0)) as gateway,
        grpc.insecure_channel(f"127.0.0.1:{gateway.port}") as channel,
    ):
        stub = pb_grpc.SegmentationServiceStub(channel)
        for name in ("det", "inst"):
            ref = ort_detect(repo, name, image)
            r = stub.Detect(pb.DetectRequest(model=name, image=raw_image(image), mask_format=pb.MASK_FORMAT_RAW))
            assert r.header.backend == "triton" and r.has_masks == (name == "inst")
            np.testing.assert_allclose(boxes_of(r), ref["boxes"], rtol=0, atol=1e-4)
            if name == "inst":
                raw = np.stack([np.frombuffer(d.mask_raw, np.uint8).reshape(64, 80) for d in r.detections])
                assert np.mean(raw != (ref["masks"] > 0.5)) < 1e-3
        e = error_of(stub.Explain, bbam_request("det", image, [[5, 5, 30, 30]], [1]))
        assert e.code() == grpc.StatusCode.UNIMPLEMENTED and "embedded backend" in e.details()
        listed = {m.name: m for m in stub.ListModels(pb.ListModelsRequest()).models}
        assert (
            listed["det"].kind == "detector" and list(listed["det"].methods) == [] and listed["det"].max_batch_size == 0
        )


def run_cli(*args: str) -> dict:
    from cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(args)) == 0
    return json.loads(out.getvalue().strip().splitlines()[-1])


def test_client_detect_and_explain_bbam(server, repo, image, tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(image).save(path)
    address = ["--server", f"127.0.0.1:{server.port}"]
    ref = ort_detect(repo, "inst", image)
    out = run_cli(
        "client",
        "detect",
        str(path),
        "--model",
        "inst",
        "--out",
        str(tmp_path / "mask.png"),
        "--max-detections",
        "2",
        *address,
    )
    assert out["model"] == "inst" and len(out["detections"]) == 2
    for i, d in enumerate(out["detections"]):
        assert d["label"] == CLASSES[ref["labels"][i] - 1]
        np.testing.assert_allclose(d["box"], ref["boxes"][i], atol=2e-3)
        written = np.asarray(Image.open(d["out"]))
        assert d["out"].endswith(f"mask_{i}_{d['label']}.png") and written.shape == (64, 80)
        assert int(written.sum()) == d["mask_pixels"] and np.mean(written != (ref["masks"][i] > 0.5)) < 1e-3
    boxes_only = run_cli("client", "detect", str(path), "--model", "det", *address)
    assert len(boxes_only["detections"]) > 0 and "out" not in boxes_only["detections"][0]
    boxes = [
        ",".join(f"{float(v)!r}" for v in b) + f",{int(c)}"
        for b, c in zip(ref["boxes"][:2], ref["labels"][:2], strict=True)
    ]
    out = run_cli(
        "client",
        "explain",
        str(path),
        "--model",
        "inst",
        "--method",
        "bbam",
        "--box",
        boxes[0],
        "--box",
        boxes[1],
        "--bbam-iterations",
        "2",
        "--bbam-proposals",
        "16",
        "--bbam-seed",
        "3",
        "--out",
        str(tmp_path / "bbam.png"),
        *address,
    )
    assert [m["out"] for m in out["maps"]] == [
        str(tmp_path / f"bbam_{i}_{out['maps'][i]['label']}.png") for i in (0, 1)
    ]
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:  # the same request through the API
        direct = pb_grpc.SegmentationServiceStub(channel).Explain(
            bbam_request(
                "inst", image, ref["boxes"][:2], ref["labels"][:2], bbam_iterations=2, bbam_proposals=16, bbam_seed=3
            )
        )
    for m, d in zip(out["maps"], direct.maps, strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(m["out"])), np.frombuffer(d.data, np.uint8).reshape(64, 80))
        assert m["positives"] == d.positives and m["box"] == pytest.approx(
            [d.box.box.x1, d.box.box.y1, d.box.box.x2, d.box.box.y2]
        )
