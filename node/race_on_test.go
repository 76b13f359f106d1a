//go:build race

package node_test

// raceEnabled: the race detector's instrumentation makes goroutine stacks
// deeper, so limits on stack memory are looser under it.
const raceEnabled = true
