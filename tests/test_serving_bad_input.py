"""Every bad input of the issue gets the right status code and a message naming the problem, the server keeps
serving, and a fuzz run of a few thousand random and mutated requests to both APIs leaves it answering correctly."""

import io

import grpc
import numpy as np
import pytest
from PIL import Image
from tritonclient.grpc import service_pb2 as kpb
from tritonclient.grpc import service_pb2_grpc as kpb_grpc

from serving.api import segmentation_pb2 as pb
from serving.api import segmentation_pb2_grpc as pb_grpc
from serving.backends.embedded import EmbeddedBackend
from serving.images import ImageLimits
from tests.serving_repo import ort_run, raw_image, running_server

INVALID, NOT_FOUND, EXHAUSTED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED
MAX_MESSAGE = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def server(serving_repo):
    with running_server(EmbeddedBackend(serving_repo, device="cpu", threads=1), max_message_bytes=MAX_MESSAGE,
                        images=ImageLimits(max_side=512, max_pixels=512 * 512)) as s:
        yield s


@pytest.fixture(scope="module")
def channel(server):
    ch = grpc.insecure_channel(f"127.0.0.1:{server.port}",
                               options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def stub(channel):
    return pb_grpc.SegmentationServiceStub(channel)


@pytest.fixture(scope="module")
def kstub(channel):
    return kpb_grpc.GRPCInferenceServiceStub(channel)


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


GOOD = np.random.default_rng(3).integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
GOOD_PNG = png(GOOD)


def status(call, request) -> tuple[grpc.StatusCode, str]:
    try:
        call(request, timeout=30)
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def seg(image: pb.Image, model: str = "seg") -> pb.SegmentRequest:
    return pb.SegmentRequest(model=model, image=image)


BAD_SEGMENT = [
    ("undecodable bytes", seg(pb.Image(encoded=b"\x00not an image at all")), INVALID, "does not decode"),
    ("truncated PNG", seg(pb.Image(encoded=GOOD_PNG[: len(GOOD_PNG) // 2])), INVALID, "does not decode"),
    ("GIF", seg(pb.Image(encoded=b"GIF89a" + b"\x00" * 40)), INVALID, "PNG or JPEG"),
    ("no image", seg(pb.Image()), INVALID, "image is missing"),
    ("zero size raw", seg(pb.Image(raw=pb.RawImage(data=b"", height=0, width=0, channels=3))), INVALID, "at least 32"),
    ("huge raw", seg(pb.Image(raw=pb.RawImage(data=b"", height=100000, width=100000, channels=3))), INVALID, "sides up to 512"),
    ("huge PNG header", seg(pb.Image(encoded=png(np.zeros((600, 40, 3), np.uint8)))), INVALID, "sides up to 512"),
    ("wrong channels", seg(pb.Image(raw=pb.RawImage(data=bytes(40 * 40 * 4), height=40, width=40, channels=4))), INVALID, "3 channels"),
    ("byte length", seg(pb.Image(raw=pb.RawImage(data=bytes(100), height=40, width=40, channels=3))), INVALID, "needs 4800"),
    ("unknown model", seg(raw_image(GOOD), "nope"), NOT_FOUND, "'nope' is not loaded"),
    ("empty model", seg(raw_image(GOOD), ""), INVALID, "model is empty"),
    ("classifier for Segment", seg(raw_image(GOOD), "cam"), INVALID, "is a classifier"),
]


@pytest.mark.parametrize("case", BAD_SEGMENT, ids=[c[0] for c in BAD_SEGMENT])
def test_bad_segment_requests(stub, case):
    _, request, code, text = case
    got, details = status(stub.Segment, request)
    assert got == code and text in details


BAD_EXPLAIN = [
    ("unknown class id", pb.ExplainRequest(model="cam", image=raw_image(GOOD), target_classes=[4]), INVALID, "unknown class ids [4]"),
    ("class id 0", pb.ExplainRequest(model="cam", image=raw_image(GOOD), target_classes=[0]), INVALID, "classes 1..3"),
    ("unknown method", pb.ExplainRequest(model="cam", image=raw_image(GOOD), method="lime"), INVALID, "unknown method 'lime'"),
    ("segmenter for Explain", pb.ExplainRequest(model="seg", image=raw_image(GOOD)), INVALID, "is a segmenter"),
    ("unknown model", pb.ExplainRequest(model="nope", image=raw_image(GOOD)), NOT_FOUND, "not loaded"),
]


@pytest.mark.parametrize("case", BAD_EXPLAIN, ids=[c[0] for c in BAD_EXPLAIN])
def test_bad_explain_requests(stub, case):
    _, request, code, text = case
    got, details = status(stub.Explain, request)
    assert got == code and text in details


@pytest.mark.parametrize("opacity,colormap,text", [(float("nan"), "jet", "opacity"), (1.5, "jet", "opacity"),
                                                   (0.5, "no-such-map", "unknown colormap")])
def test_bad_overlay_requests(stub, opacity, colormap, text):
    got, details = status(stub.Overlay, pb.OverlayRequest(model="cam", image=raw_image(GOOD), opacity=opacity, colormap=colormap))
    assert got == INVALID and text in details


def test_oversized_message_is_resource_exhausted_and_the_server_goes_on(stub, serving_repo):
    big = np.zeros((1200, 1200, 3), np.uint8)  # 4.3 MB > the server's 2 MiB limit
    got, _ = status(stub.Segment, seg(raw_image(big)))
    assert got == EXHAUSTED
    r = stub.Segment(pb.SegmentRequest(model="seg", image=raw_image(GOOD), mask_format=pb.MASK_FORMAT_RAW))
    np.testing.assert_array_equal(np.frombuffer(r.mask_raw, np.uint8).reshape(40, 48), ort_run(serving_repo, "seg", GOOD[None])["mask"][0])


def kinfer(datatype: str, shape: list[int], raw: bytes | None = None, model: str = "seg", **contents) -> kpb.ModelInferRequest:
    request = kpb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="pixels", datatype=datatype, shape=shape)
    if contents:
        for k, v in contents.items():
            getattr(tensor.contents, k).extend(v)
    if raw is not None:
        request.raw_input_contents.append(raw)
    return request


BAD_KSERVE = [
    ("byte length", kinfer("UINT8", [1, 40, 40, 3], bytes(10)), INVALID, "needs 4800"),
    ("NaN", kinfer("FP32", [1, 2], np.array([np.nan, 0], np.float32).tobytes()), INVALID, "NaN"),
    ("NaN contents", kinfer("FP32", [2], fp32_contents=[1.0, float("nan")]), INVALID, "NaN"),
    ("unknown datatype", kinfer("BYTES", [1], b"\x00" * 8), INVALID, "not supported"),
    ("negative shape", kinfer("UINT8", [-1, 40, 40, 3], b""), INVALID, "negative"),
    ("contents count", kinfer("UINT8", [1, 40, 40, 3], uint_contents=[1, 2, 3]), INVALID, "needs 4800"),
    ("unknown model", kinfer("UINT8", [1, 40, 40, 3], bytes(4800), model="nope"), NOT_FOUND, "not loaded"),
    ("tiny image", kinfer("UINT8", [1, 2, 2, 3], bytes(12)), INVALID, "at least 32"),
    ("huge image", kinfer("UINT8", [1, 600, 40, 3], bytes(72000)), INVALID, "sides up to 512"),
]


@pytest.mark.parametrize("case", BAD_KSERVE, ids=[c[0] for c in BAD_KSERVE])
def test_bad_kserve_requests(kstub, case):
    _, request, code, text = case
    got, details = status(kstub.ModelInfer, request)
    assert got == code and text in details


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 6))):
        op = rng.integers(0, 3)
        if op == 0 and b:
            b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        elif op == 1 and b:
            del b[int(rng.integers(0, len(b))):][: int(rng.integers(1, 64))]
        else:
            b[int(rng.integers(0, len(b) + 1)):0] = bytes(rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8))
    return bytes(b)


def test_fuzz_both_apis_then_a_valid_request_is_still_right(channel, serving_repo):
    """2,000 requests: random bytes, mutated serialized messages and mutated images, to every RPC of both APIs."""
    rng = np.random.default_rng(0)
    seeds = [
        ("/weakseg.v1.SegmentationService/Segment", seg(pb.Image(encoded=GOOD_PNG)), pb.SegmentResponse),
        ("/weakseg.v1.SegmentationService/Explain", pb.ExplainRequest(model="cam", image=raw_image(GOOD), top_k=2), pb.ExplainResponse),
        ("/weakseg.v1.SegmentationService/Overlay", pb.OverlayRequest(model="cam", image=pb.Image(encoded=GOOD_PNG)), pb.OverlayResponse),
        ("/weakseg.v1.SegmentationService/GetModelMetadata", pb.ModelMetadataRequest(model="seg"), pb.ModelMetadataResponse),
        ("/inference.GRPCInferenceService/ModelInfer", kinfer("UINT8", [1, 40, 48, 3], GOOD.tobytes()), kpb.ModelInferResponse),
        ("/inference.GRPCInferenceService/ModelMetadata", kpb.ModelMetadataRequest(name="seg"), kpb.ModelMetadataResponse),
    ]
    calls = [(channel.unary_unary(path, request_serializer=None, response_deserializer=resp.FromString), req.SerializeToString())
             for path, req, resp in seeds]
    codes: dict[str, int] = {}
    for i in range(2000):
        call, data = calls[i % len(calls)]
        kind = rng.integers(0, 4)
        if kind == 0:
            payload = bytes(rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8))
        elif kind == 1:
            payload = _mutate(data, rng)
        elif kind == 2:  # a well-formed message with a mutated image
            payload = seg(pb.Image(encoded=_mutate(GOOD_PNG, rng))).SerializeToString() if i % 2 else \
                seg(pb.Image(raw=pb.RawImage(data=_mutate(GOOD.tobytes()[:600], rng), height=int(rng.integers(0, 64)),
                                             width=int(rng.integers(0, 64)), channels=int(rng.integers(0, 5))))).SerializeToString()
            call = calls[0][0]
        else:
            payload = data
        try:
            call(payload, timeout=30)
            code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            code = e.code()
        codes[code.name] = codes.get(code.name, 0) + 1
        assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE), (i, kind)
    assert codes.get("OK", 0) >= 400 and codes.get("INVALID_ARGUMENT", 0) >= 400, codes
    r = pb_grpc.SegmentationServiceStub(channel).Segment(pb.SegmentRequest(model="seg", image=raw_image(GOOD),
                                                                           mask_format=pb.MASK_FORMAT_RAW))
    np.testing.assert_array_equal(np.frombuffer(r.mask_raw, np.uint8).reshape(40, 48), ort_run(serving_repo, "seg", GOOD[None])["mask"][0])
