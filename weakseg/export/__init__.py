"""Export of segmenters and CAM classifiers to ONNX and Triton model-repository entries."""

from weakseg.export.repository import ExportError, ExportOptions, ExportResult, export_model
from weakseg.export.triton_config import ServingOptions

__all__ = ["ExportError", "ExportOptions", "ExportResult", "ServingOptions", "export_model"]
