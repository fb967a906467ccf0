"""The error types appliance services raise; the CLI, API and UI map them to answers."""


class NixieError(Exception):
    """Base of every error the appliance reports to a user."""

    exit_code = 1
    http_status = 400
    code = "failed"  # what `--json` errors and the API's error body name it


class InvalidInput(NixieError):
    """The caller gave a value that cannot be used (bad MAC, bad name...)."""

    code = "invalid"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class NotFound(NixieError):
    http_status = 404
    code = "not_found"


class Conflict(NixieError):
    http_status = 409
    code = "conflict"


class Unavailable(NixieError):
    """Something the router itself lacks (a packaged boot binary, a tool): not the
    caller's fault; the same request works once the admin installs it (HTTP 503)."""

    http_status = 503
    code = "unavailable"


class UsageError(NixieError):
    """The command line is wrong (`nixie`'s argument parser)."""

    exit_code = 2
    code = "usage"


class ConfigError(NixieError):
    """The configuration file is unusable; `key` names the offending key."""

    exit_code = 2
    code = "config"

    def __init__(self, key: str, problem: str):
        super().__init__(f"config: {key}: {problem}" if key else f"config: {problem}")
        self.key = key
        self.problem = problem
