"""Structured log lines on stderr (logfmt: ts=... level=... logger=... msg=... k=v).

Values of keys that look like secrets are masked, so tokens and passwords
never reach the log even when a caller passes them by mistake.
"""

from __future__ import annotations

import logging
import re
import sys
import time

_SECRET_KEYS = re.compile(r"(token|password|secret|passwd|key|authorization)", re.I)
_SECRET_INLINE = re.compile(
    r"((?:nixie\.token|token|password|secret|Authorization: Bearer)[=: ]+)([^\s\"']+)", re.I)
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _quote(v: object) -> str:
    s = str(v)
    if s == "" or any(c in s for c in ' ="\n\t'):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return s


def redact(text: str) -> str:
    return _SECRET_INLINE.sub(lambda m: m.group(1) + "***", text)


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"ts={ts}.{int(record.msecs):03d}Z", f"level={record.levelname.lower()}",
                 f"logger={record.name}", f"msg={_quote(redact(record.getMessage()))}"]
        for k, v in record.__dict__.items():
            if k in _RESERVED or k.startswith("_"):
                continue
            parts.append(f"{k}={'***' if _SECRET_KEYS.search(k) else _quote(redact(str(v)))}")
        if record.exc_info:
            parts.append(f"exc={_quote(redact(self.formatException(record.exc_info)))}")
        return " ".join(parts)


def setup_logging(level: str = "info", stream=None) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    # waitress and werkzeug are chatty at info
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
