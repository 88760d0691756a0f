"""Export of segmenters and CAM classifiers to ONNX and Triton model-repository entries."""

from typing import Any

__all__ = ["ExportError", "ExportOptions", "ExportResult", "ServingOptions", "export_model"]


def __getattr__(name: str) -> Any:
    """Import the exporter (and PyTorch) only when it is used, so torch-free readers of the package stay light."""
    if name == "ServingOptions":
        from weakseg.export.triton_config import ServingOptions

        return ServingOptions
    if name in __all__:
        from weakseg.export import repository

        return getattr(repository, name)
    raise AttributeError(f"module 'weakseg.export' has no attribute {name!r}")
