// A Node http server for the Node recipe (tests/recipes.rs): it serves on the
// socket baton passes at fd 3 (`server.listen({fd: 3})`). Node cannot send
// READY=1 (its dgram module has no unix sockets): run it under
// `baton --ready-when accepting`.
//
// GET / answers "generation=G pid=P" (BATON_GENERATION and the pid).
//
// `node node_server.js 0` is the plain wiring: server.close() on SIGTERM,
// which (Node 19 and later) also closes every idle keep-alive connection at
// once; a client may be sending its next request on one. With a grace in ms
// (1000 by default) the server stops accepting without closing anything,
// answers every request with "Connection: close" for the grace, and only
// then closes the connections still idle.
"use strict";
const http = require("http");
const net = require("net");

const grace = Number(process.argv[2] ?? 1000);
const generation = process.env.BATON_GENERATION ?? "0";
let draining = false;

const server = http.createServer((req, res) => {
  const body = `generation=${generation} pid=${process.pid}\n`;
  const headers = { "Content-Type": "text/plain", "Content-Length": Buffer.byteLength(body) };
  if (draining) {
    // Node closes the connection after this response; the client opens a
    // new one, to the new generation.
    headers.Connection = "close";
  }
  res.writeHead(200, headers);
  res.end(body);
});
server.listen({ fd: 3 });

process.on("SIGTERM", () => {
  if (grace <= 0) {
    server.close();
    return;
  }
  draining = true;
  // Stop accepting only: net.Server's close, not http.Server's (which also
  // closes idle connections). Closes this process's copy of fd 3, never
  // shutdown(2).
  net.Server.prototype.close.call(server);
  setTimeout(() => server.closeIdleConnections(), grace);
});
