"""The weakseg.v1 API end to end over loopback gRPC on the embedded backend: answers equal onnxruntime run
directly, responses echo model, version and request id, gradient methods run within their limits."""

import io

import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from serving.api import segmentation_pb2 as pb
from serving.api import segmentation_pb2_grpc as pb_grpc
from serving.backends.embedded import EmbeddedBackend
from serving.explain import GradientLimits
from tests.serving_repo import CLASSES, ort_run, raw_image, running_server


@pytest.fixture(scope="module")
def server(serving_repo):
    with running_server(EmbeddedBackend(serving_repo, device="cpu", threads=1),
                        gradients=GradientLimits(max_advcam_steps=3, default_advcam_steps=2)) as s:
        yield s


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield pb_grpc.SegmentationServiceStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(7).integers(0, 256, size=(72, 88, 3), dtype=np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_segment_raw_and_png_masks_equal_onnxruntime(stub, serving_repo, image):
    ref = ort_run(serving_repo, "seg", image[None])
    r = stub.Segment(pb.SegmentRequest(model="seg", image=raw_image(image), mask_format=pb.MASK_FORMAT_PNG_AND_RAW,
                                       request_id="req-1"))
    assert (r.header.model, r.header.model_version, r.header.request_id, r.header.backend) == ("seg", "1", "req-1", "embedded")
    raw = np.frombuffer(r.mask_raw, np.uint8).reshape(r.height, r.width)
    png = np.asarray(Image.open(io.BytesIO(r.mask_png)))
    assert (r.height, r.width) == (72, 88)
    np.testing.assert_array_equal(raw, ref["mask"][0])
    np.testing.assert_array_equal(png, ref["mask"][0])
    counts = np.bincount(ref["mask"][0].ravel(), minlength=len(CLASSES) + 1)
    assert [s.class_id for s in r.present] == sorted(np.flatnonzero(counts), key=lambda c: -counts[c])
    assert sum(s.pixel_fraction for s in r.present) == pytest.approx(1.0, abs=1e-5)
    logits = ref["logits"][0].astype(np.float64)
    prob = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
    np.testing.assert_allclose([s.score for s in r.scores], prob.reshape(len(prob), -1).max(1), rtol=1e-4)
    assert [s.label for s in r.scores] == ["background", *CLASSES]


def test_segment_accepts_encoded_png_and_greyscale(stub, serving_repo, image):
    r = stub.Segment(pb.SegmentRequest(model="seg", image=pb.Image(encoded=png_bytes(image)), mask_format=pb.MASK_FORMAT_RAW))
    np.testing.assert_array_equal(np.frombuffer(r.mask_raw, np.uint8).reshape(72, 88), ort_run(serving_repo, "seg", image[None])["mask"][0])
    assert not r.mask_png  # raw only
    grey = stub.Segment(pb.SegmentRequest(model="seg", image=pb.Image(encoded=png_bytes(image[..., 0]))))
    assert (grey.height, grey.width) == (72, 88) and grey.mask_png


def test_request_id_from_metadata_or_generated(stub, image):
    _, call = stub.Segment.with_call(pb.SegmentRequest(model="seg", image=raw_image(image)),
                                     metadata=(("x-request-id", "from-metadata"),))
    assert dict(call.trailing_metadata())["x-request-id"] == "from-metadata"
    r1 = stub.Segment(pb.SegmentRequest(model="seg", image=raw_image(image)))
    r2 = stub.Segment(pb.SegmentRequest(model="seg", image=raw_image(image)))
    assert len(r1.header.request_id) == 32 and r1.header.request_id != r2.header.request_id


def test_explain_cam_equals_the_exported_graph_top_k_and_targets(stub, serving_repo, image):
    ref = ort_run(serving_repo, "cam", image[None])
    order = [int(i) + 1 for i in np.argsort(-ref["logits"][0], kind="stable")]
    r = stub.Explain(pb.ExplainRequest(model="cam", image=raw_image(image), top_k=2))
    assert r.method == "cam" and [m.class_id for m in r.maps] == order[:2]
    assert [m.label for m in r.maps] == [CLASSES[c - 1] for c in order[:2]]
    for m in r.maps:
        got = np.frombuffer(m.data, np.uint8).reshape(72, 88).astype(int)
        want = np.rint(ref["cams"][0][m.class_id - 1] * 255).astype(int)
        assert np.abs(got - want).max() <= 1
        assert m.score == pytest.approx(1 / (1 + np.exp(-ref["logits"][0][m.class_id - 1])), rel=1e-5)
    f16 = stub.Explain(pb.ExplainRequest(model="cam", image=raw_image(image), target_classes=[3, 1],
                                         map_format=pb.MAP_FORMAT_FLOAT16))
    assert [m.class_id for m in f16.maps] == [3, 1] and f16.map_format == pb.MAP_FORMAT_FLOAT16
    np.testing.assert_allclose(np.frombuffer(f16.maps[0].data, "<f2").reshape(72, 88), ref["cams"][0][2], atol=1e-3)


def library_maps(checkpoint, method: str, image: np.ndarray, classes: list[int], **params) -> np.ndarray:
    """The library's maps [K, H, W] for 0-based classes, as the server documents them: one scale, no flip."""
    from weakseg.attribution import MultiScale, build_method, compute_maps
    from weakseg.models.classifier_io import load_classifier

    model, _ = load_classifier(checkpoint, "cpu")
    x = torch.from_numpy(image).permute(2, 0, 1).float().div(255.0)
    return compute_maps(build_method(method, **params), model, x, classes, MultiScale(scales=(1.0,), flip=False)).detach().numpy()


@pytest.mark.parametrize("method,steps,params", [("gradcam", 0, {}), ("advcam", 0, {"steps": 2}),  # 2: the default here
                                                  ("advcam", 3, {"steps": 3})])
def test_gradient_methods_equal_the_library_maps(stub, serving_repo, image, method, steps, params):
    r = stub.Explain(pb.ExplainRequest(model="cam", image=raw_image(image), method=method, target_classes=[2, 1],
                                       advcam_steps=steps))
    assert r.method == method and [m.class_id for m in r.maps] == [2, 1]
    got = np.stack([np.frombuffer(m.data, np.uint8).reshape(72, 88) for m in r.maps]).astype(int)
    # the source checkpoint the repository was exported from, not the server's copy
    want = library_maps(serving_repo.parent / "cam.safetensors", method, image, [1, 0], **params)
    assert np.abs(got - np.rint(want * 255).astype(int)).max() <= 1
    cam = np.stack([np.frombuffer(m.data, np.uint8).reshape(72, 88) for m in stub.Explain(
        pb.ExplainRequest(model="cam", image=raw_image(image), method="cam", target_classes=[2, 1])).maps]).astype(int)
    assert np.abs(got - cam).max() > 1  # beyond the tolerance above: CAM's maps would not pass for this method's
    flipped = library_maps(serving_repo.parent / "cam.safetensors", method, image[:, ::-1].copy(), [1, 0], **params)
    assert np.abs(got - np.rint(flipped[..., ::-1] * 255)).mean() > 1  # single scale without flip, as documented
    f16 = stub.Explain(pb.ExplainRequest(model="cam", image=raw_image(image), method=method, target_classes=[3],
                                         advcam_steps=steps, map_format=pb.MAP_FORMAT_FLOAT16))
    np.testing.assert_allclose(np.frombuffer(f16.maps[0].data, "<f2").reshape(72, 88),
                               library_maps(serving_repo.parent / "cam.safetensors", method, image, [2], **params)[0],
                               atol=2e-3)


def test_advcam_steps_above_the_server_limit_are_refused(stub, image):
    with pytest.raises(grpc.RpcError) as e:
        stub.Explain(pb.ExplainRequest(model="cam", image=raw_image(image), method="advcam", advcam_steps=4))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit of 3" in e.value.details()


def test_overlays_are_pngs_of_the_image_size(stub, image):
    r = stub.Overlay(pb.OverlayRequest(model="cam", image=raw_image(image), top_k=2, colormap="viridis", opacity=0.7))
    assert len(r.overlays) == 2 and r.header.model == "cam"
    for o in r.overlays:
        assert Image.open(io.BytesIO(o.png)).size == (88, 72)
    mask = stub.Overlay(pb.OverlayRequest(model="seg", image=raw_image(image), kind=pb.OVERLAY_KIND_MASK, opacity=0.0))
    assert len(mask.overlays) == 1
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(mask.overlays[0].png))), image)  # opacity 0


def test_list_models_and_metadata(stub):
    r = stub.ListModels(pb.ListModelsRequest(request_id="abc"))
    assert r.request_id == "abc" and r.backend == "embedded"
    by_name = {m.name: m for m in r.models}
    assert by_name["seg"].kind == "segmenter" and list(by_name["seg"].labels) == ["background", *CLASSES]
    assert list(by_name["cam"].methods) == ["cam", "gradcam", "advcam"] and list(by_name["seg"].methods) == []
    assert [(t.name, t.datatype, list(t.shape)) for t in by_name["seg"].inputs] == [("pixels", "UINT8", [-1, -1, -1, 3])]
    meta = stub.GetModelMetadata(pb.ModelMetadataRequest(model="cam"))
    assert meta.header.model == "cam" and meta.metadata.max_batch_size == 8


def test_gradient_methods_refuse_images_above_the_pixel_limit(stub):
    big = np.zeros((600, 600, 3), np.uint8)  # 360,000 pixels > the default 512 x 512 limit
    with pytest.raises(grpc.RpcError) as e:
        stub.Explain(pb.ExplainRequest(model="cam", image=raw_image(big), method="gradcam", target_classes=[1]))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most 262144 pixels" in e.value.details()
    assert len(stub.Explain(pb.ExplainRequest(model="cam", image=raw_image(big), method="cam")).maps) == 1  # CAM has no such limit
