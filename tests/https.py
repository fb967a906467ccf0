"""Talking to the admin web UI, which is HTTPS by default with a certificate the
appliance made itself: clients in tests accept it unverified (the tests that are
about the certificate compare its fingerprint instead: tests/unit/test_web_hardening.py,
the browser tier)."""

from __future__ import annotations

import ssl
import urllib.request

# the self-signed certificate of a test's own state dir
UNVERIFIED = ssl._create_unverified_context()


def urlopen(url_or_request, timeout: float = 10):
    """urllib.request.urlopen that accepts the appliance's own certificate."""
    return urllib.request.urlopen(url_or_request, timeout=timeout, context=UNVERIFIED)


# what a test runs with `python -c` inside a namespace to GET a URL of the admin UI:
# prints the status, then the body
# prints the status, then the body; an API token as the second argument is sent as a Bearer
GET_SNIPPET = ("import ssl,sys,urllib.request,urllib.error\n"
               "ctx=ssl._create_unverified_context()\n"
               "h={'Authorization': 'Bearer '+sys.argv[2]} if len(sys.argv) > 2 else {}\n"
               "try:\n r=urllib.request.urlopen(urllib.request.Request(sys.argv[1],headers=h),"
               "timeout=5,context=ctx);"
               "print(r.status);print(r.read().decode())\n"
               "except urllib.error.HTTPError as e:\n print(e.code);print(e.read().decode())\n")
