"""`weakseg client segment|explain|overlay|detect|models`: call a weakseg server from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cli.common import add_parser
from weakseg.errors import WeaksegError


def _connection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default="127.0.0.1:8001", help="host:port of a weakseg server")
    p.add_argument(
        "--api-key-file", type=Path, default=None, help="file holding the API key (its first non-comment line)"
    )
    p.add_argument("--tls-ca", type=Path, default=None, help="CA certificate of the server (turns TLS on)")
    p.add_argument("--tls-cert", type=Path, default=None, help="client certificate for mutual TLS")
    p.add_argument("--tls-key", type=Path, default=None, help="client key for mutual TLS")
    p.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds")
    p.add_argument("--request-id", default="", help="request id echoed in the response (default: the server makes one)")


def _image_options(p: argparse.ArgumentParser, model_help: str) -> None:
    p.add_argument("image", type=Path, help="PNG or JPEG file")
    p.add_argument("--model", required=True, help=model_help)
    p.add_argument("--model-version", default="", help="model version (default: the loaded one)")
    p.add_argument(
        "--out", type=Path, required=True, help="output PNG (several classes: one file each, suffixed _<label>)"
    )


def _explain_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--method", default="cam", help="cam (single-scale, exported graph) | gradcam | advcam (embedded backend)"
    )
    p.add_argument("--classes", type=int, nargs="*", default=[], help="class ids 1..C (default: the top-k predicted)")
    p.add_argument("--top-k", type=int, default=1, help="classes explained when --classes is empty")
    p.add_argument("--advcam-steps", type=int, default=0, help="AdvCAM steps (0 = the server's default)")


def _box(text: str) -> tuple[float, float, float, float, int]:
    """X1,Y1,X2,Y2,CLASS -> a box in pixel-edge coordinates and its class id."""
    parts = text.split(",")
    try:
        if len(parts) != 5:
            raise ValueError
        x1, y1, x2, y2 = (float(v) for v in parts[:4])
        return x1, y1, x2, y2, int(parts[4])
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X1,Y1,X2,Y2,CLASS (class id 1..C), got {text!r}") from None


def _bbam_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--box",
        type=_box,
        action="append",
        default=[],
        metavar="X1,Y1,X2,Y2,CLASS",
        help="method bbam (detectors): a box in pixel-edge coordinates and its class id; repeat for more boxes",
    )
    p.add_argument("--bbam-iterations", type=int, default=0, help="BBAM Adam steps (0 = the server's default)")
    p.add_argument("--bbam-proposals", type=int, default=0, help="BBAM proposals per box (0 = the server's default)")
    p.add_argument("--bbam-seed", type=int, default=0, help="seed of BBAM's proposal jitter")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `client` and its calls."""
    client = add_parser(sub, "client", "call a weakseg server (segment, explain, overlay, detect, models)")
    csub = client.add_subparsers(dest="call", metavar="CALL")
    csub.required = True
    p = add_parser(csub, "segment", "label mask of an image (palette PNG) and the classes present")
    _image_options(p, "segmenter name")
    p.set_defaults(func=run_segment)
    p = add_parser(csub, "explain", "attribution maps of an image (greyscale PNG per class or box, 255 = peak)")
    _image_options(p, "classifier name (detector or instance segmenter: --method bbam with --box)")
    _explain_options(p)
    _bbam_options(p)
    p.set_defaults(func=run_explain)
    p = add_parser(csub, "overlay", "attribution heat-map overlay (classifier) or mask overlay (segmenter) as PNG")
    _image_options(p, "classifier (attribution) or segmenter (mask) name")
    _explain_options(p)
    p.add_argument("--kind", default="attribution", choices=["attribution", "mask"], help="what to overlay")
    p.add_argument("--colormap", default="jet", help="matplotlib colormap of attribution overlays")
    p.add_argument("--opacity", type=float, default=0.5, help="overlay opacity in [0, 1]")
    p.set_defaults(func=run_overlay)
    p = add_parser(
        csub, "detect", "boxes, classes and scores from a detector (+ a mask PNG per detection from a Mask R-CNN)"
    )
    p.add_argument("image", type=Path, help="PNG or JPEG file")
    p.add_argument("--model", required=True, help="detector or instance segmenter name")
    p.add_argument("--model-version", default="", help="model version (default: the loaded one)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="instance segmenters: write each detection's mask as <out>_<i>_<label>.png (1 = instance; "
        "default: masks are not requested)",
    )
    p.add_argument("--min-score", type=float, default=0.0, help="leave out detections scoring below this")
    p.add_argument("--max-detections", type=int, default=0, help="keep at most this many (0 = all)")
    p.add_argument("--mask-threshold", type=float, default=0.5, help="mask probability above which a pixel is on")
    p.set_defaults(func=run_detect)
    p = add_parser(csub, "models", "list the server's models with their kind, labels and inputs")
    p.set_defaults(func=run_models)
    for parser in csub.choices.values():
        _connection_options(parser)


def _client(args: argparse.Namespace):
    from serving.auth import first_key
    from serving.client import Client, ClientOptions

    key = None
    if args.api_key_file is not None:
        if not args.api_key_file.is_file():
            raise WeaksegError(f"{args.api_key_file}: file not found")
        try:
            key = first_key(args.api_key_file)
        except ValueError as e:
            raise WeaksegError(str(e)) from e
    return Client(
        ClientOptions(
            address=args.server,
            api_key=key,
            tls_ca=args.tls_ca,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            timeout_s=args.timeout,
        )
    )


def _call(args: argparse.Namespace, rpc: str, request):
    import grpc

    client = _client(args)
    try:
        return client.call(rpc, request)
    except grpc.RpcError as e:
        raise WeaksegError(f"{args.server}: {rpc} failed: {e.code().name}: {e.details()}") from None
    finally:
        client.close()


def _image(args: argparse.Namespace):
    from serving.client import image_message

    if not args.image.is_file():
        raise WeaksegError(f"{args.image}: image file not found")
    return image_message(args.image)


def _outputs(out: Path, labels: list[str]) -> list[Path]:
    if len(labels) == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{label}{out.suffix or '.png'}") for label in labels]


def _header(response) -> dict:
    h = response.header
    return {"model": h.model, "model_version": h.model_version, "request_id": h.request_id, "backend": h.backend}


def run_segment(args: argparse.Namespace) -> int:
    """Segment an image; write the mask PNG; print the classes present as JSON."""
    from serving.api import segmentation_pb2 as pb
    from weakseg.io import atomic_write_bytes

    r = _call(
        args,
        "Segment",
        pb.SegmentRequest(
            request_id=args.request_id, model=args.model, model_version=args.model_version, image=_image(args)
        ),
    )
    atomic_write_bytes(args.out, r.mask_png)
    print(
        json.dumps(
            {
                **_header(r),
                "out": str(args.out),
                "height": r.height,
                "width": r.width,
                "present": [
                    {
                        "class_id": s.class_id,
                        "label": s.label,
                        "pixel_fraction": round(s.pixel_fraction, 5),
                        "score": round(s.score, 5),
                    }
                    for s in r.present
                ],
            }
        )
    )
    return 0


def run_explain(args: argparse.Namespace) -> int:
    """Explain an image; write one greyscale map PNG per class; print the classes and scores as JSON."""
    from serving.api import segmentation_pb2 as pb
    from weakseg.io import atomic_write_bytes, encode_png

    r = _call(
        args,
        "Explain",
        pb.ExplainRequest(
            request_id=args.request_id,
            model=args.model,
            model_version=args.model_version,
            image=_image(args),
            method=args.method,
            target_classes=args.classes,
            top_k=0 if args.method == "bbam" else args.top_k,
            advcam_steps=args.advcam_steps,
            boxes=[pb.BoxTarget(box=pb.Box(x1=x1, y1=y1, x2=x2, y2=y2), class_id=c) for x1, y1, x2, y2, c in args.box],
            bbam_iterations=args.bbam_iterations,
            bbam_proposals=args.bbam_proposals,
            bbam_seed=args.bbam_seed,
        ),
    )
    by_box = r.method == "bbam"
    paths = _outputs(args.out, [f"{i}_{m.label}" if by_box else m.label for i, m in enumerate(r.maps)])
    for m, path in zip(r.maps, paths, strict=True):
        atomic_write_bytes(path, encode_png(np.frombuffer(m.data, np.uint8).reshape(r.height, r.width)))
    print(
        json.dumps(
            {
                **_header(r),
                "method": r.method,
                "maps": [
                    {"class_id": m.class_id, "label": m.label, "score": round(m.score, 5), "out": str(p)}
                    | (
                        {
                            "box": [m.box.box.x1, m.box.box.y1, m.box.box.x2, m.box.box.y2],
                            "positives": m.positives,
                            "iou_threshold": round(m.iou_threshold, 5),
                        }
                        if by_box
                        else {}
                    )
                    for m, p in zip(r.maps, paths, strict=True)
                ],
            }
        )
    )
    return 0


def run_overlay(args: argparse.Namespace) -> int:
    """Render an overlay on the server; write the PNG(s); print what was written as JSON."""
    from serving.api import segmentation_pb2 as pb
    from weakseg.io import atomic_write_bytes

    kind = pb.OVERLAY_KIND_MASK if args.kind == "mask" else pb.OVERLAY_KIND_ATTRIBUTION
    r = _call(
        args,
        "Overlay",
        pb.OverlayRequest(
            request_id=args.request_id,
            model=args.model,
            model_version=args.model_version,
            image=_image(args),
            kind=kind,
            method=args.method,
            target_classes=args.classes,
            top_k=args.top_k,
            colormap=args.colormap,
            opacity=args.opacity,
            advcam_steps=args.advcam_steps,
        ),
    )
    paths = _outputs(args.out, [o.label for o in r.overlays])
    for o, path in zip(r.overlays, paths, strict=True):
        atomic_write_bytes(path, o.png)
    print(
        json.dumps(
            {
                **_header(r),
                "overlays": [
                    {"class_id": o.class_id, "label": o.label, "out": str(p)}
                    for o, p in zip(r.overlays, paths, strict=True)
                ],
            }
        )
    )
    return 0


def run_detect(args: argparse.Namespace) -> int:
    """Detect objects; write each detection's mask PNG (instance segmenters, with --out); print them as JSON."""
    from serving.api import segmentation_pb2 as pb
    from weakseg.io import atomic_write_bytes

    r = _call(
        args,
        "Detect",
        pb.DetectRequest(
            request_id=args.request_id,
            model=args.model,
            model_version=args.model_version,
            image=_image(args),
            min_score=args.min_score,
            max_detections=args.max_detections,
            mask_format=pb.MASK_FORMAT_PNG,
            mask_threshold=args.mask_threshold,
            boxes_only=args.out is None,
        ),
    )
    detections = []
    for i, d in enumerate(r.detections):
        entry = {
            "class_id": d.class_id,
            "label": d.label,
            "score": round(d.score, 5),
            "box": [round(v, 3) for v in (d.box.x1, d.box.y1, d.box.x2, d.box.y2)],
        }
        if r.has_masks and args.out is not None:
            path = args.out.with_name(f"{args.out.stem}_{i}_{d.label}{args.out.suffix or '.png'}")
            atomic_write_bytes(path, d.mask_png)
            entry |= {"mask_pixels": d.mask_pixels, "out": str(path)}
        detections.append(entry)
    print(json.dumps({**_header(r), "height": r.height, "width": r.width, "detections": detections}))
    return 0


def run_models(args: argparse.Namespace) -> int:
    """Print the server's models as JSON."""
    from google.protobuf.json_format import MessageToDict

    from serving.api import segmentation_pb2 as pb

    r = _call(args, "ListModels", pb.ListModelsRequest(request_id=args.request_id))
    print(json.dumps(MessageToDict(r, preserving_proto_field_name=True)))
    return 0
