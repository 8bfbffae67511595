// Command sampleapp is the workload image of the local control plane's real nodes, imported as
// localcluster.local/sample-app:1: an HTTP server on :8080 whose answers a test sets through the
// pod's environment, so a canary of a "new version" can be made healthy or failing.
//
//	GET /          200, body "$VERSION\n"
//	GET /healthz   $STATUS (default 200), body "$VERSION\n"
//
// It exits on SIGTERM once in-flight requests are done.
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	version := os.Getenv("VERSION")
	status := http.StatusOK
	if s := os.Getenv("STATUS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sampleapp: STATUS=%q is not a number\n", s)
			os.Exit(2)
		}
		status = n
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, version) })
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(status)
		fmt.Fprintln(w, version)
	})
	server := &http.Server{Addr: ":8080", Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = server.Shutdown(shutdown)
	}()
	fmt.Printf("sampleapp %s serving on :8080 (healthz status %d)\n", version, status)
	if err := server.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
