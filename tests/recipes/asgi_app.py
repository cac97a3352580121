"""An ASGI app for the uvicorn recipe (tests/recipes.rs), and its launcher.

GET / answers "generation=G pid=P" (BATON_GENERATION and the worker's pid).

Plain wiring: `uvicorn --fd 3 asgi_app:app`. On SIGTERM uvicorn stops
accepting and at once closes every connection that is not inside a request:
idle keep-alive connections (a client may be sending on one) and connections
it accepted but has not read yet. Both lose requests.

The recipe, `python3 asgi_app.py [GRACE_SECONDS]`: the same uvicorn, with a
drain grace. On SIGTERM it stops accepting and, for the grace (1 s), keeps
every connection open and answers each request with `Connection: close`;
only then does uvicorn's own shutdown close what is left (by then nothing a
client is still sending on).
"""

import asyncio
import os
import sys

GENERATION = os.environ.get("BATON_GENERATION", "0")
draining = False


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = f"generation={GENERATION} pid={os.getpid()}\n".encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    if draining:
        # This connection's client opens a new one (to the new generation)
        # for its next request.
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main():
    import uvicorn

    grace = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame):
            global draining
            if draining or grace <= 0:
                return super().handle_exit(sig, frame)
            draining = True
            loop = asyncio.get_running_loop()

            def begin_drain():
                # Stop accepting now, without closing the server: an
                # asyncio Server closed while a connection it has just
                # accepted waits for its transport drops that connection
                # unanswered. uvicorn's own shutdown, which closes the
                # server and the idle connections, starts after the grace.
                for server in self.servers:
                    for sock in server.sockets:
                        loop.remove_reader(sock.fileno())
                loop.call_later(grace, uvicorn.Server.handle_exit, self, sig, frame)

            loop.call_soon_threadsafe(begin_drain)

    config = uvicorn.Config(app, fd=3, lifespan="off", log_level="warning")
    DrainingServer(config).run()


if __name__ == "__main__":
    main()
