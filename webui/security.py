"""Who may do what: the first-run gate, sessions, API tokens, CSRF, login
rate limits and the security headers every response carries."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from flask import Flask, current_app, g, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError, CSRFProtect, generate_csrf

from appliance.domain import apitokens, settings, users
from appliance.domain.loginlimits import LoginLimits
from appliance.errors import NixieError
from appliance.state.status import human_size

from .api.errors import api_error
from .context import conn
from .fragments import forget_all, mark_changed

csrf = CSRFProtect()

# reachable before login (and, for the first two, before setup)
# the hook checks its signature; /metrics its source address and token (webui/metrics.py)
PUBLIC_ENDPOINTS = {"static", "healthz", "api.flake_hook", "metrics.metrics"}
SETUP_ENDPOINTS = {"setup.wizard"}
LOGIN_ENDPOINTS = {"auth.login"}
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
       "form-action 'self'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def is_api() -> bool:
    return request.path.startswith("/api/")


def behind_tls() -> bool:
    return request.is_secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


class NixieSessionInterface(SecureCookieSessionInterface):
    """Signed cookie sessions; the cookie is Secure when the request came over TLS
    (directly or through a proxy that says so)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        try:
            return behind_tls()
        except RuntimeError:  # outside a request
            return bool(app.config.get("SESSION_COOKIE_SECURE"))


# ---------------------------------------------------------------- the guard


def _setup_done(app: Flask) -> bool:
    if app.extensions.get("nixie_setup_done"):
        return True
    done = settings.is_setup_complete(conn())
    if done:
        app.extensions["nixie_setup_done"] = True
    return done


def _bearer() -> str | None:
    h = request.headers.get("Authorization", "")
    if h[:7].lower() == "bearer ":
        return h[7:].strip()
    return None


def login_user(uid: int, username: str) -> None:
    """A fresh session (nothing kept from before the login), with its CSRF secret
    made now, so the cookie set at login is the one the browser keeps. The login
    time goes in the signed cookie: the session ends PERMANENT_SESSION_LIFETIME
    after it, however often it is used or changed (a change re-signs the cookie,
    which would otherwise restart the signature's age)."""
    session.clear()
    session.permanent = True
    session["uid"] = uid
    session["user"] = username
    session["login_at"] = int(time.time())
    session["stamp"] = users.stamp_of(conn(), uid)  # ends when the password changes
    g.pop("csrf_token", None)  # flask-wtf's per-request copy of the old token
    generate_csrf()


def guard():
    """Runs before every request: setup gate, authentication, CSRF."""
    endpoint = request.endpoint or ""
    if endpoint in PUBLIC_ENDPOINTS:
        return None
    if not _setup_done(current_app):
        if endpoint in SETUP_ENDPOINTS:
            return _csrf_check()
        if is_api():
            return api_error(503, "setup is not complete: open the web UI and run the setup wizard")
        return redirect(url_for("setup.wizard"))

    token = _bearer() if is_api() else None
    if token is not None:
        user = apitokens.verify_token(conn(), token)
        if user is None:
            return api_error(401, "the API token is wrong or revoked")
        g.user = user
        g.auth = "token"
        return None  # a bearer token is not sent by browsers on their own: no CSRF needed

    resp = _csrf_check()
    if resp is not None:
        return resp
    user = session_user()
    if user is not None:
        g.user = user
        g.auth = "session"
        return None
    if endpoint in LOGIN_ENDPOINTS or endpoint in SETUP_ENDPOINTS:
        return None
    for k in ("uid", "user", "login_at", "stamp"):
        session.pop(k, None)
    if is_api():
        return api_error(401, "log in or send Authorization: Bearer <API token>")
    nxt = request.full_path if request.method == "GET" else None
    return redirect(url_for("auth.login", next=nxt.rstrip("?") if nxt else None))


def session_user() -> dict | None:
    """The user this request's session belongs to; None when there is none, or it
    is older than the session lifetime (counted from the login, not the last use)."""
    uid, at = session.get("uid"), session.get("login_at")
    if not isinstance(uid, int) or not isinstance(at, int):
        return None
    age = time.time() - at
    if not -60 <= age <= current_app.permanent_session_lifetime.total_seconds():
        return None
    return users.session_user(conn(), uid, session.get("stamp"))


def authenticated_quietly() -> bool:
    """A logged-in session or a valid API token, on a public endpoint (nothing
    refused or recorded when neither)."""
    token = _bearer()
    if token is not None:
        return apitokens.verify_token(conn(), token) is not None
    return session_user() is not None


def _csrf_check():
    if request.method in UNSAFE_METHODS and current_app.config.get("WTF_CSRF_ENABLED", True):
        csrf.protect()  # raises CSRFError
    return None


def safe_next(target: str | None) -> str | None:
    """Only local paths: no scheme, no host, no //evil."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") \
            or "\\" in target:
        return None
    return target


def add_headers(resp):
    if request.method in UNSAFE_METHODS:  # this app may have changed something
        forget_all()  # in this process; `mark_changed` covers the other web workers
        if g.get("auth") != "token":  # API token clients have no session to mark
            mark_changed()
    for k, v in HEADERS.items():
        resp.headers.setdefault(k, v)
    if behind_tls():
        resp.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if request.endpoint != "static":
        resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def init_app(app: Flask) -> None:
    app.session_interface = NixieSessionInterface()
    app.extensions["nixie_login_limits"] = LoginLimits()
    csrf.init_app(app)
    app.before_request(guard)
    app.after_request(add_headers)

    def error_response(code: int, api_message: str, title: str, message: str,
                       field: str | None = None, kind: str | None = None):
        """The API's JSON error, or the error page for a browser."""
        if is_api():
            return api_error(code, api_message, field, kind)
        return render_template("error.html", code=code, title=title, message=message), code

    @app.errorhandler(CSRFError)
    def csrf_failed(e):
        return error_response(400, f"CSRF check failed: {e.description} "
                                   "(send X-CSRFToken, or use an API token)",
                              "Form expired or forged",
                              f"{e.description} Go back, reload the page and try again.")

    @app.errorhandler(NixieError)
    def nixie_error(e):
        status = e.http_status
        title = {404: "Not found", 409: "Already there"}.get(status, "That did not work")
        return error_response(status, str(e), title, str(e), getattr(e, "field", None), e.code)

    def http_error(code: int, api_message: str, title: str, message: str):
        def handler(e):
            return error_response(code, api_message.format(method=request.method), title, message)
        return handler

    for code, api_message, title, message in (
            (404, "no such API endpoint or object", "Not found",
             "There is no page at this address."),
            (405, "method {method} is not allowed here", "Method not allowed",
             "This page does not accept that request."),
            (500, "internal error; see the appliance log", "Internal error",
             "Something broke; the appliance log has the details.")):
        app.register_error_handler(code, http_error(code, api_message, title, message))

    @app.errorhandler(413)
    def too_large(e):
        """The limit of the path that refused (a backup archive's is larger than a form's)."""
        limit = human_size(request.max_content_length or 0)
        return error_response(413, f"request body too large: this path takes at most {limit}",
                              "Too large", f"The upload is larger than {limit}, the most this "
                                           "page takes.")
