"""Daphne with a redacted access log and a lingering close:
``python -m playground.serve [daphne options] <application>``.

The ``daphne`` command writes its access log (``--access-log``, or stdout at the default
verbosity) straight to a stream, bypassing logging, so a credential in a request's query (a
vendor sandbox's ``?token=`` or ``?api_key=``) would be written as is. This runs the same
command line with the paths of its access log redacted (`playground.logfilters.redact`).
"""

from __future__ import annotations

import daphne.server
from daphne.cli import CommandLineInterface
from daphne.server import Server
from daphne.ws_protocol import WebSocketFactory

from playground import heap
from playground.logfilters import redact


def redacting(action_logger):
    """An action logger that passes every entry on with its path redacted."""

    def log(protocol, action, details):
        if isinstance(details.get("path"), str):
            details = {**details, "path": redact(details["path"])}
        action_logger(protocol, action, details)

    return log


# Autobahn waits 1 s for the reply to a close frame, then drops the connection with the peer's data
# still unread, so the kernel answers with a reset, and a reset makes the peer's kernel discard what
# its program had not read yet: the error sent before the close included. A flooding client's reply
# waits behind its own backlog, which Autobahn reads and discards while it waits (a lingering close),
# so give it the time to arrive.
CLOSE_HANDSHAKE_TIMEOUT = 5.0


class LingeringWebSocketFactory(WebSocketFactory):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.setProtocolOptions(closeHandshakeTimeout=CLOSE_HANDSHAKE_TIMEOUT)


class RedactingServer(Server):
    def __init__(self, *args, action_logger=None, **kwargs):
        super().__init__(*args, action_logger=redacting(action_logger) if action_logger else None, **kwargs)

    def run(self):
        # Server.run() builds its factory from the module's name; Daphne offers no option for this.
        daphne.server.WebSocketFactory = LingeringWebSocketFactory
        heap.freeze()  # the application is loaded by now (playground/heap.py)
        super().run()


class RedactingCLI(CommandLineInterface):
    server_class = RedactingServer


if __name__ == "__main__":
    RedactingCLI.entrypoint()
