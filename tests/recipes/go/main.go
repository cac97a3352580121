// A Go net/http server for the Go recipe (tests/recipes.rs): its socket from
// go-systemd's activation package (LISTEN_FDS, fd 3), READY=1 through its
// daemon package, and a drain that does not race keep-alive clients.
//
// GET / answers "generation=G pid=P" (BATON_GENERATION and the pid).
//
// -drain-grace 0 is the plain wiring: srv.Shutdown on SIGTERM, which closes
// every idle keep-alive connection at once; a client may be sending its next
// request on one. With -drain-grace D (1s by default) the server stops
// accepting, answers every request with "Connection: close" for D, and only
// then calls Shutdown (which waits for requests in progress).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/activation"
	"github.com/coreos/go-systemd/daemon"
)

func main() {
	grace := flag.Duration("drain-grace", time.Second, "answer with Connection: close this long before Shutdown (0: Shutdown at once)")
	flag.Parse()

	listeners, err := activation.Listeners()
	if err != nil || len(listeners) != 1 {
		log.Fatalf("expected 1 socket from LISTEN_FDS, got %d (%v)", len(listeners), err)
	}
	ln := listeners[0]

	generation := os.Getenv("BATON_GENERATION")
	var draining atomic.Bool
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if draining.Load() {
			// net/http closes the connection after this response; the
			// client opens a new one, to the new generation.
			w.Header().Set("Connection", "close")
		}
		fmt.Fprintf(w, "generation=%s pid=%d\n", generation, os.Getpid())
	})}

	done := make(chan struct{})
	go func() {
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		<-term
		if *grace > 0 {
			draining.Store(true)
			// Stop accepting: closes this process's copy of the socket
			// (never shutdown(2)); baton's stays open for the new workers.
			ln.Close()
			time.Sleep(*grace)
		}
		// Closes what is idle by now, waits for requests in progress.
		srv.Shutdown(context.Background())
		close(done)
	}()

	daemon.SdNotify(false, daemon.SdNotifyReady)
	if err := srv.Serve(ln); err != http.ErrServerClosed && !draining.Load() {
		log.Fatalf("serve: %v", err)
	}
	<-done
}
