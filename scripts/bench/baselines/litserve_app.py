"""LitServe serving the same pipeline, with the same dynamic batching as our TorchServe config.

LitServe hands ``decode_request`` the parsed JSON body (payloads cross a process boundary, so they
must be picklable); clients send ``{"image": "<base64 JPEG>"}``, which the pipeline accepts as is.

Usage: python -m scripts.baselines.litserve_app --archive model_store/face_detector-2.0.mar --port 5001
"""

from __future__ import annotations

import argparse

import litserve as ls
from fastapi import Response

from handlers.errors import InputError
from scripts.inprocess import ArchivedModel

__all__ = ["DetectionAPI", "main"]


class DetectionAPI(ls.LitAPI):
    def __init__(self, archive: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.archive = archive

    def setup(self, device: str) -> None:
        self.pipeline = ArchivedModel(self.archive)

    def predict(self, bodies: list[dict]) -> list:
        return self.pipeline.process([{"body": body} for body in bodies])

    def encode_response(self, outcome):  # noqa: ANN001, ANN201 - LitServe's hook signature
        if isinstance(outcome, InputError):
            return Response(content=outcome.message, status_code=outcome.status)
        return outcome.to_json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batch-timeout", type=float, default=0.005, help="seconds")
    args = parser.parse_args()
    api = DetectionAPI(args.archive, max_batch_size=args.batch_size, batch_timeout=args.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(port=args.port, host="127.0.0.1", generate_client_file=False)


if __name__ == "__main__":
    main()
