package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// Probe is GET path on the hub's HTTP address: the status code, and the
// body decoded as a JSON object when it is one.
func (h *Hub) Probe(ctx context.Context, path string) (int, map[string]any, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.HTTPURL+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("loadtest: GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("loadtest: GET %s: %w", path, err)
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m) // a plain-text answer (the 503 of /ws) leaves m nil
	return resp.StatusCode, m, nil
}

// WaitReady polls /readyz until it answers 200, the child exits or ctx
// ends.
func (h *Hub) WaitReady(ctx context.Context) error {
	_, err := h.WaitReadiness(ctx, true)
	return err
}

// StartTogether launches one hub process per element of args at the same
// moment and waits, until ctx ends, for every one to answer /readyz 200.
// It returns the hubs (running; the caller stops them) and how long each
// took from launch to ready. On an error the hubs are returned too, with
// their logs, so the caller can show them.
func StartTogether(ctx context.Context, bin string, args [][]string) ([]*Hub, []time.Duration, error) {
	hubs := make([]*Hub, len(args))
	took := make([]time.Duration, len(args))
	errs := make([]error, len(args))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range args {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			t0 := time.Now()
			h, err := LaunchHub(bin, args[i]...)
			if err != nil {
				errs[i] = err
				return
			}
			hubs[i] = h
			if err := h.WaitReady(ctx); err != nil {
				errs[i] = fmt.Errorf("hub %d: %w\nlog tail:\n%s", i, err, h.LogTail(4096))
				return
			}
			took[i] = time.Since(t0)
		}()
	}
	close(start)
	wg.Wait()
	return hubs, took, errors.Join(errs...)
}
