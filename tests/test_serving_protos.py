"""The committed stubs in serving/api are exactly what scripts/gen_protos.py generates from protos/."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_stubs_match_the_protos(tmp_path):
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    written = gen.generate(tmp_path)
    names = sorted(p.name for p in written)
    assert names == ["segmentation_pb2.py", "segmentation_pb2.pyi", "segmentation_pb2_grpc.py"]
    for path in written:
        committed = ROOT / "serving" / "api" / path.name
        assert committed.read_text() == path.read_text(), f"{committed} is stale: run python scripts/gen_protos.py"


def test_stubs_import_without_clashing_with_the_core_package():
    from serving.api import segmentation_pb2, segmentation_pb2_grpc

    assert segmentation_pb2.DESCRIPTOR.package == "weakseg.v1"
    assert segmentation_pb2.DESCRIPTOR.name == "weakseg/v1/segmentation.proto"
    assert hasattr(segmentation_pb2_grpc, "SegmentationServiceStub")
