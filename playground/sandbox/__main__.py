"""Run one vendor's sandbox alone on a loopback port: python -m playground.sandbox liku --port 9001

Its credentials derive from --secret (default: the SECRET_KEY environment variable), so a server
with the same SECRET_KEY talks to it with the credentials of `<module>.client_config(url, secret)`.
Run alone it has no topics of ours: every call gets the sandbox's generic script.
"""

import argparse
import logging
import os
import pkgutil

import uvicorn

from playground import sandbox
from playground.logfilters import RedactQuery
from playground.sandbox import load

# Every vendor module of the package (playground/sandbox/<vendor>.py): a new one needs no entry here.
MODULES = {m.name: f"playground.sandbox.{m.name}"
           for m in pkgutil.iter_modules(sandbox.__path__) if not m.name.startswith("_")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("vendor", choices=sorted(MODULES))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secret", default=os.environ.get("SECRET_KEY", ""),
                        help="the secret the credentials derive from (default: $SECRET_KEY)")  # fmt: skip
    args = parser.parse_args()
    if not args.secret:
        parser.error("give --secret or set SECRET_KEY: the sandbox's credentials derive from it")
    app = load(MODULES[args.vendor]).make_app(args.secret)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="info")  # sets up its loggers
    for name in ("uvicorn.access", "uvicorn.error"):  # request lines carry ?token= and ?api_key=
        logging.getLogger(name).addFilter(RedactQuery())
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
