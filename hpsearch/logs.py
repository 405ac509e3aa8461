"""Logging for the command line: one line per problem on the console (tracebacks only with ``-v``), and every
record with its traceback in an optional log file that all local workers share."""

from __future__ import annotations

import logging
import os
import sys
import warnings

import optuna

from hpsearch.errors import SpecError


class QuietOptuna(logging.Filter):
    """Drops Optuna's records that hpsearch already reports in its own words."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        # a failed trial's own line (with its reason) comes from the progress output; the traceback from the log file
        return "failed with value None" not in msg and "Surplus(" not in msg and "failed with parameters" not in msg


class OneLineFormatter(logging.Formatter):
    """Log records without tracebacks: the console gets one line per problem."""

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord(record.__dict__)
        record.exc_info = record.exc_text = None
        return super().format(record)


def setup_logging(verbose: bool, log_file: str | None = None) -> None:
    """Console: one line per problem (tracebacks with ``verbose``). ``log_file``: every record with its
    traceback (failed trials' included), appended; SpecError (exit 2) if it cannot be opened."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    handler = logging.StreamHandler(sys.stderr)
    fmt = "[%(levelname)s %(name)s] %(message)s"
    handler.setFormatter(logging.Formatter(fmt) if verbose else OneLineFormatter(fmt))
    handler.setLevel(logging.DEBUG if verbose else logging.WARNING)
    handler.addFilter(QuietOptuna())
    handlers: list[logging.Handler] = [handler]
    if log_file:
        try:
            fh = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as e:
            raise SpecError(f"--log-file: cannot open {log_file!r}: {e.strerror}") from None
        fh.setFormatter(logging.Formatter(f"%(asctime)s pid {os.getpid()} [%(levelname)s %(name)s] %(message)s"))
        handlers.append(fh)
    optuna.logging.disable_default_handler()
    for name in ("optuna", "hpsearch"):
        lg = logging.getLogger(name)
        lg.handlers[:] = handlers
        lg.propagate = False
        lg.setLevel(logging.DEBUG if (verbose or log_file) and name == "hpsearch" else logging.WARNING)
