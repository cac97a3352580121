# Puma config for the Puma recipe (tests/recipes.rs): `puma -C puma.rb config.ru`.

# Serve on the socket baton passes (LISTEN_FDS, fd 3), and bind nothing else:
# without "only", Puma also binds its default tcp://0.0.0.0:9292.
bind_to_activated_sockets "only"
workers 2

# No reactor: a thread reads each connection it accepted. At the drain
# signal Puma's reactor closes every connection it holds that has no
# complete request yet: idle keep-alive connections a client may be sending
# on, and connections accepted but not read yet. Without it, every response
# says "Connection: close" (no keep-alive) and every accepted connection is
# read and answered before the worker exits.
queue_requests false

# Exit 0 after a graceful stop (baton warns about a worker killed by SIGTERM).
raise_exception_on_sigterm false
