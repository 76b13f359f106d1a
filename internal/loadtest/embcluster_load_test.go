//go:build load

package loadtest

import (
	"os"
	"strconv"
	"testing"
)

// TestEmbeddedClusterRejoinLoop is the long form of
// TestEmbeddedClusterRejoin: 18 rounds (each node killed with SIGKILL and
// started again six times; EMBCLUSTER_ROUNDS changes it) with 50 devices
// on each node. Every round the restarted node must rejoin (ready, serving
// devices) while the others keep every session; then two nodes killed
// leave the survivor not ready until one returns.
//
//	go test -tags load -run TestEmbeddedClusterRejoinLoop -v ./internal/loadtest
func TestEmbeddedClusterRejoinLoop(t *testing.T) {
	rounds := 18
	if v := os.Getenv("EMBCLUSTER_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("EMBCLUSTER_ROUNDS=%q: want a positive number", v)
		}
		rounds = n
	}
	runClusterRejoin(t, rounds, 50)
}
