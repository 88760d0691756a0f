"""`model.py` of a python-backend repository entry: runs the entry's `model.onnx` with onnxruntime (CPU).

Copied verbatim into `<repo>/<name>/<version>/model.py` by weakseg.export.python_backend; Triton's python
backend stub imports it (it is never imported by weakseg itself). It needs only numpy and onnxruntime in the
stub's interpreter. The dynamic batcher hands `execute` several requests at once: requests whose image
sizes match are joined into one onnxruntime call and the outputs are split back by each request's batch size;
a request the session rejects gets its own error response while the others still succeed. An entry with
max_batch_size 0 (detectors and Mask R-CNNs: one uint8 [height, width, 3] image per run, outputs whose first
axis counts detections) runs each request on its own and returns the outputs whole.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """One onnxruntime session per model instance."""

    def initialize(self, args):
        """Open model.onnx next to this file with the CPU provider (threads from the `onnx_threads` parameter)."""
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_names = [o["name"] for o in config["output"]]
        self.batched = int(config.get("max_batch_size", 0)) > 0
        parameters = config.get("parameters", {})
        threads = int(parameters.get("onnx_threads", {}).get("string_value", "0") or 0)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def _error(self, message):
        """An error response answered with INVALID_ARGUMENT where this Triton supports codes."""
        code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
        error = pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)
        return pb_utils.InferenceResponse(output_tensors=[], error=error)

    def execute(self, requests):
        """One response per request, in order; same-shape requests share one onnxruntime run."""
        responses = [None] * len(requests)
        groups: dict[
            tuple[int, ...], list[tuple[int, np.ndarray, list[str]]]
        ] = {}  # image size -> (index, pixels, outputs)
        for index, request in enumerate(requests):
            pixels = pb_utils.get_input_tensor_by_name(request, self.input_name)
            if pixels is None:
                responses[index] = self._error(f"input {self.input_name!r} is missing")
                continue
            array = pixels.as_numpy()
            layout = "[batch, height, width, 3]" if self.batched else "[height, width, 3]"
            if array.ndim != (4 if self.batched else 3) or array.shape[-1] != 3 or array.dtype != np.uint8:
                responses[index] = self._error(
                    f"input {self.input_name!r} must be uint8 {layout}, got {array.dtype} {list(array.shape)}"
                )
                continue
            wanted = list(request.requested_output_names()) or self.output_names
            # unbatched: every request is its own group (the key holds its index)
            key = array.shape[1:] if self.batched else (index, *array.shape)
            groups.setdefault(key, []).append((index, array, wanted))
        for members in groups.values():
            names = [n for n in self.output_names if any(n in wanted for _, _, wanted in members)]
            batch = members[0][1] if len(members) == 1 else np.concatenate([array for _, array, _ in members])
            try:
                outputs = dict(zip(names, self.session.run(names, {self.input_name: batch}), strict=True))
            except Exception as e:  # onnxruntime raises several types for inputs the graph cannot take
                for index, array, _ in members:
                    responses[index] = self._error(
                        f"onnxruntime rejected input of shape {list(array.shape)}: {str(e).splitlines()[0][:300]}"
                    )
                continue
            if not self.batched:
                index, _, wanted = members[0]
                tensors = [pb_utils.Tensor(n, np.ascontiguousarray(outputs[n])) for n in names if n in wanted]
                responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
                continue
            start = 0
            for index, array, wanted in members:
                stop = start + array.shape[0]
                tensors = [
                    pb_utils.Tensor(n, np.ascontiguousarray(outputs[n][start:stop])) for n in names if n in wanted
                ]
                responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
                start = stop
        return responses

    def finalize(self):
        """Drop the session."""
        self.session = None
