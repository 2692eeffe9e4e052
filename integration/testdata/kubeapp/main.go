// Command kubeapp is the program in the app images the kubelet test runs
// (built static, packed with internal/imagebuild: the test pulls no image
// from outside). It prints "kubeapp <marker> started" and then either
// waits for SIGTERM or SIGINT or, with -exit-after, exits with -code after
// that long (a container that keeps crashing).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	marker := flag.String("marker", "", "text to print at start")
	exitAfter := flag.Duration("exit-after", 0, "exit after this long (0: run until signalled)")
	code := flag.Int("code", 1, "exit code with -exit-after")
	flag.Parse()
	fmt.Printf("kubeapp %s started\n", *marker)
	if *exitAfter > 0 {
		time.Sleep(*exitAfter)
		os.Exit(*code)
	}
	wait()
}

func wait() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
