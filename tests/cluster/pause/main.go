// Command pause is the sandbox ("pause") image of the local control plane's real nodes: it holds
// a pod's namespaces open, reaps the children it inherits, and exits on SIGINT or SIGTERM.
// No registry is reachable here, so the image is built from this program and imported locally.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s == syscall.SIGCHLD {
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}
