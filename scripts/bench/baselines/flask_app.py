"""The simplest way to serve the model: Flask, one request at a time, the same pipeline.

Usage: python -m scripts.baselines.flask_app --archive model_store/face_detector-2.0.mar --port 5000
"""

from __future__ import annotations

import argparse
import json

from flask import Flask, Response, request

from handlers.errors import InputError
from scripts.inprocess import ArchivedModel

__all__ = ["create_app", "main"]


def create_app(archive: str) -> Flask:
    pipeline = ArchivedModel(archive)
    app = Flask(__name__)

    @app.post("/predict")
    def predict() -> Response:
        outcome = pipeline.process([{"body": request.get_data()}])[0]
        status = outcome.status if isinstance(outcome, InputError) else 200
        return Response(json.dumps(outcome.to_json()), status=status, mimetype="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    create_app(args.archive).run(host="127.0.0.1", port=args.port, threaded=False)


if __name__ == "__main__":
    main()
