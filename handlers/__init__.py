"""Detection code shared by the TorchServe handlers, the in-process pipeline and the tools.

Nothing here imports TorchServe: the handler modules (``*_handler.py``) are thin adapters around
:class:`handlers.pipeline.DetectionPipeline`, so batch scoring and benchmarks run the very same code.
"""
