"""Detection code shared by the TorchServe handlers, the in-process pipeline and the tools.

Nothing here imports TorchServe: the handler modules (``*_handler.py``) are thin adapters around
:class:`handlers.pipeline.DetectionPipeline`, so batch scoring and benchmarks run the very same code.
"""

__all__ = [
    "coco_labels",
    "config",
    "errors",
    "face_handler",
    "features",
    "geometry",
    "image_decode",
    "metrics",
    "mtcnn",
    "mtcnn_detector",
    "mtcnn_handler",
    "object_detector",
    "object_handler",
    "object_models",
    "pipeline",
    "request_parsing",
    "retinaface",
    "retinaface_detector",
    "schema",
    "settings",
    "tensor_decode",
    "tiling",
    "ts_adapter",
]
