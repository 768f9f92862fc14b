"""Errors answered to clients in TF Serving's form, and the config error the CLI reports.

A `ServingError` carries an absl status code name (`INVALID_ARGUMENT`, `NOT_FOUND`, ...);
the REST app turns it into `{"error": message}` with the HTTP status TF Serving uses for
that code.

Example:

>>> err = invalid("Missing 'inputs' or 'instances' key")
>>> err.http_status, err.status_string()
(400, "INVALID_ARGUMENT: Missing 'inputs' or 'instances' key")
"""

from __future__ import annotations

HTTP_OF = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
           "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 429, "UNAVAILABLE": 503, "INTERNAL": 500,
           "UNKNOWN": 500, "UNIMPLEMENTED": 501, "DEADLINE_EXCEEDED": 504,
           "PAYLOAD_TOO_LARGE": 413}


class ServingError(Exception):
    """An error answered as `{"error": message}` with TF Serving's HTTP code for `code`."""

    def __init__(self, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = HTTP_OF[code]
        self.headers = headers or {}

    def status_string(self) -> str:
        # absl::Status::ToString() form, which TF Serving nests in some messages.
        return f"{self.code}: {self.message}"


def invalid(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


class ConfigError(ValueError):
    """A bad model config file or flag; the message names the file and what to change."""

