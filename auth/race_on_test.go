//go:build race

package auth

// raceEnabled: under the race detector, sync.Pool drops items at random,
// so allocation counts of pooled paths are not checked.
const raceEnabled = true
