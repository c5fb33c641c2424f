"""Run one vendor's sandbox alone on a loopback port: python -m playground.sandbox liku --port 9001"""

import argparse
import os

import django
import uvicorn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("vendor")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")
    django.setup()
    from playground.sandbox import load

    uvicorn.run(load(args.vendor).app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
