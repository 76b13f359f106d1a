package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// Bounds of the test's side of a device child.
const (
	childReadyTimeout = 30 * time.Second // StartDeviceChild waits this long for the first answer
	childCallTimeout  = 10 * time.Second // one control request
	childStopWait     = time.Minute      // Stop waits this long for the child to exit
)

// DeviceChild is a running device child process (see RunDeviceChild),
// seen from the test that started it.
type DeviceChild struct {
	*child
	Spec ChildSpec
	nc   *nats.Conn
}

// StartDeviceChild writes spec into dir and runs exe (a test binary whose
// TestMain runs RunDeviceChild when ChildSpecEnv is set) as a device
// child, its output in dir/child-<index>.log. It returns once the child
// answers on its control subjects, over nc, at most 30 s; the child
// starts connecting its devices at once.
func StartDeviceChild(ctx context.Context, exe, dir string, index int, spec ChildSpec, nc *nats.Conn) (*DeviceChild, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	name := "child-" + strconv.Itoa(index)
	path := filepath.Join(dir, name+".json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return nil, err
	}
	p, err := startChildEnv(exe, []string{"-test.run=^$"}, []string{ChildSpecEnv + "=" + path}, dir, filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	c := &DeviceChild{child: p, Spec: spec, nc: nc}
	rctx, cancel := context.WithTimeout(ctx, childReadyTimeout)
	defer cancel()
	err = poll(rctx, 50*time.Millisecond, func() error {
		if exited, werr := p.Exited(); exited {
			return fmt.Errorf("%w: %v", errExited, werr)
		}
		_, err := c.Stats(rctx)
		return err
	})
	if err != nil {
		p.Kill()
		return nil, fmt.Errorf("loadtest: device child %d not ready: %w\nlog tail:\n%s", index, err, p.LogTail(2048))
	}
	return c, nil
}

// Stats asks the child for its state.
func (c *DeviceChild) Stats(ctx context.Context) (ChildStats, error) {
	var s ChildStats
	return s, c.call(ctx, "stats", nil, &s)
}

// Check asks the child how a probe was received.
func (c *DeviceChild) Check(ctx context.Context, pc ProbeCheck) (ProbeResult, error) {
	b, err := json.Marshal(pc)
	if err != nil {
		return ProbeResult{}, err
	}
	var r ProbeResult
	return r, c.call(ctx, "check", b, &r)
}

// Stop tells the child to close its devices and exit, and waits for it
// (at most a minute, then SIGKILL). It returns the child's last stats, when
// it answered, and its exit error.
func (c *DeviceChild) Stop(ctx context.Context) (ChildStats, error) {
	var s ChildStats
	err := c.call(ctx, "stop", nil, &s)
	if !c.Wait(childStopWait) {
		c.Kill()
		return s, errors.Join(err, fmt.Errorf("loadtest: device child %d did not exit within %v", c.PID, childStopWait))
	}
	_ = c.logFile.Close()
	_, werr := c.Exited()
	return s, errors.Join(err, werr)
}

func (c *DeviceChild) call(ctx context.Context, op string, data []byte, v any) error {
	ctx, cancel := context.WithTimeout(ctx, childCallTimeout)
	defer cancel()
	m, err := c.nc.RequestWithContext(ctx, c.Spec.Control+"."+op, data)
	if err != nil {
		return fmt.Errorf("loadtest: device child %d %s: %w", c.PID, op, err)
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(m.Data, &e) == nil && e.Error != "" {
		return fmt.Errorf("loadtest: device child %d %s: %s", c.PID, op, e.Error)
	}
	return json.Unmarshal(m.Data, v)
}
