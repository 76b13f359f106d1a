package node_test

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
)

// At info a node writes one line per interval for its session starts and
// ends, not one per session; those are at debug.
func TestSessionsSummedUpAtInfo(t *testing.T) {
	t.Parallel()
	var logs hubtest.LogBuffer
	n := hubtest.StartNode(t, natstest.Run(t), "log-a", func(h *hub.Config, _ *nodeConfig) {
		h.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		h.SessionLogInterval = 100 * time.Millisecond
	})
	devs := make([]*hubtest.Client, 3)
	for i := range devs {
		devs[i] = hubtest.Device(t, n, fmt.Sprintf("LOG-%d", i), "robot")
	}
	_ = devs[0].Conn.Close()
	natstest.Eventually(t, 10*time.Second, func() error {
		s := logs.String()
		if !strings.Contains(s, `by_role="device=3"`) || !strings.Contains(s, `by_reason="closed=1"`) {
			return fmt.Errorf("no summary of 3 device starts and 1 end yet:\n%s", s)
		}
		return nil
	})
	if s := logs.String(); strings.Contains(s, "session authenticated") || strings.Contains(s, "session ended") {
		t.Fatalf("a per-session line at info:\n%s", s)
	}
}
