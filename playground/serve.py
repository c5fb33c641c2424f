"""Daphne with a redacted access log: ``python -m playground.serve [daphne options] <application>``.

The ``daphne`` command writes its access log (``--access-log``, or stdout at the default
verbosity) straight to a stream, bypassing logging, so a credential in a request's query (a
vendor sandbox's ``?token=`` or ``?api_key=``) would be written as is. This runs the same
command line with the paths of its access log redacted (`playground.logfilters.redact`).
"""

from __future__ import annotations

from daphne.cli import CommandLineInterface
from daphne.server import Server

from playground.logfilters import redact


def redacting(action_logger):
    """An action logger that passes every entry on with its path redacted."""

    def log(protocol, action, details):
        if isinstance(details.get("path"), str):
            details = {**details, "path": redact(details["path"])}
        action_logger(protocol, action, details)

    return log


class RedactingServer(Server):
    def __init__(self, *args, action_logger=None, **kwargs):
        super().__init__(*args, action_logger=redacting(action_logger) if action_logger else None, **kwargs)


class RedactingCLI(CommandLineInterface):
    server_class = RedactingServer


if __name__ == "__main__":
    RedactingCLI.entrypoint()
