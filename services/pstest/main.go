// Command pstest runs Google's in-memory Pub/Sub fake (cloud.google.com/go/pubsub/v2/pstest)
// as a standalone gRPC server on 127.0.0.1, so tests can talk to it through PUBSUB_EMULATOR_HOST.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"cloud.google.com/go/pubsub/v2/pstest"
)

func main() {
	port := flag.Int("port", 8085, "TCP port to listen on (127.0.0.1 and all local interfaces)")
	flag.Parse()

	srv := pstest.NewServerWithPort(*port)
	// The Python side waits for this line in the log before probing with a real client.
	fmt.Printf("pstest listening on %s\n", srv.Addr)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	sig := <-stop
	log.Printf("pstest: %v received, shutting down", sig)
	if err := srv.Close(); err != nil {
		log.Printf("pstest: close: %v", err)
	}
}
