"""Start the page: harmonize a tune in the browser, hear it, read its score, take the files home.

    python serve.py                        # http://127.0.0.1:8000, the models in models/
    python serve.py --port 8080
    python serve.py --host 0.0.0.0         # anyone on the network can use it (a warning says so)
    python serve.py --set models.transformer=runs/my_gpt/best.pt

Ctrl-C or SIGTERM stops it within a second, whatever it is doing. The page (bachsformer/static/)
needs no outside host: it works offline. The API it calls is listed at /api
(from /openapi.json, by the package's own page: no Swagger UI, whose scripts come from a CDN).
The score on the page needs music21 and verovio
(pip install music21 verovio); without them the page says so and shows the rest.
"""

import argparse
import os
import sys
from pathlib import Path

import uvicorn

from bachsformer.config import load_config
from bachsformer.errors import ArgumentParser, BachsformerError, exit_on_user_error
from bachsformer.sampling import set_sampling_threads
from bachsformer.server import create_app

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
GRACE_SECONDS = 1


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--config", default="config.yaml", help="config file (default: config.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    args = parser.parse_args()
    if not 1 <= args.port <= 65535:
        raise BachsformerError(f"--port must lie in 1 ... 65535, got {args.port}")
    config = load_config(args.config, args.set)
    for path, command in (
        (config.models.vq_vae, "train_vq_vae.py"),
        (config.models.transformer, "train_transformer.py"),
    ):
        if not Path(path).is_file():
            raise BachsformerError(f"{path}: model not found; train it with python {command} --write-models")
    set_sampling_threads(config.generate.threads)  # one thread unless asked: more only contend on a shared CPU
    if args.host not in LOCAL_HOSTS:
        print(f"warning: listening on {args.host}: anyone on the network can use this page", file=sys.stderr)
    app = create_app(config)
    print(f"bachsformer: open http://{args.host}:{args.port}/ (Ctrl-C stops it)", flush=True)
    # Ctrl-C or SIGTERM: requests in flight get a second to finish, then the server stops at once, without
    # waiting for a model call or a score's reading still running in a worker thread (it keeps no state)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=GRACE_SECONDS)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    exit_on_user_error(main)
