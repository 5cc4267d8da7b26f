"""From weights to archives and images: weight conversion (``convert_retinaface``,
``convert_mtcnn``), ONNX export (``export_retinaface_onnx``), ``.mar`` archives (``build_archives``,
``build_object_detector``), gRPC stubs (``grpc_stubs``) and per-target server configs for
containers (``container_config``), image builds with this machine's pip sources (``image_build``).

    python -m scripts.packaging.build_archives
"""

__all__ = [
    "build_archives",
    "build_object_detector",
    "container_config",
    "convert_mtcnn",
    "convert_retinaface",
    "export_retinaface_onnx",
    "grpc_stubs",
    "image_build",
]
