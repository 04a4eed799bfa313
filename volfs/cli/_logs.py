"""Where the log records of a CLI process go: :class:`CliLogHandler`, and :func:`install`.

Records come only from the layers below the API (the store, blobs, catalog, mounts), which
the commands that only talk to a daemon (:mod:`volfs.cli.control`) never import: the root
group installs the handler when it loads any other command's module, so ``volfs commit``
starts without the logging module.

Must not: configure the root logger (a daemon does, for its log file).
"""

from __future__ import annotations

import logging

import click


class CliLogHandler(logging.Handler):
    """A command reports the error that ends it as its one ``Error:`` line, so ERROR records
    (the blob store logs the damage it finds) would only repeat it, as a second line;
    warnings show as ``warning: …``. A daemon configures the root logger and keeps every
    record in its log instead."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.ERROR and not logging.getLogger().handlers:
            click.echo(f"warning: {record.getMessage()}", err=True)


def install() -> None:
    """Sends the ``volfs`` loggers' records to :class:`CliLogHandler` (once per process)."""
    logger = logging.getLogger("volfs")
    if not any(isinstance(h, CliLogHandler) for h in logger.handlers):
        logger.addHandler(CliLogHandler())


__all__ = ["CliLogHandler", "install"]
