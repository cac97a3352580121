"""A WSGI app for the gunicorn and uWSGI recipes (tests/recipes.rs).

GET / answers "generation=G pid=P": the generation baton started this worker
in (BATON_GENERATION) and the pid of the process that served the request, so
the test can tell which generation answered.
"""

import os

GENERATION = os.environ.get("BATON_GENERATION", "0")


def app(environ, start_response):
    body = f"generation={GENERATION} pid={os.getpid()}\n".encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]


# uWSGI looks for "application" by default.
application = app
