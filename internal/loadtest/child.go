package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// child is a child process whose standard output and error go to a log
// file. A goroutine waits for it, so Exited and Wait never block on a
// process that has not been reaped.
type child struct {
	PID     int
	LogPath string // the child's stdout and stderr

	cmd     *exec.Cmd
	logFile *os.File
	done    chan struct{} // closed when the child has exited
	waitErr error         // valid once done is closed
}

// startChild runs path with args in dir, appending its output to logPath.
func startChild(path string, args []string, dir, logPath string) (*child, error) {
	return startChildEnv(path, args, nil, dir, logPath)
}

// startChildEnv is startChild with env (each "KEY=value") added to the
// environment the child inherits.
func startChildEnv(path string, args, env []string, dir, logPath string) (*child, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	c := &child{LogPath: logPath, logFile: lf, done: make(chan struct{})}
	c.cmd = exec.Command(path, args...)
	c.cmd.Stdout = lf
	c.cmd.Stderr = lf
	c.cmd.Dir = dir
	if len(env) > 0 {
		c.cmd.Env = append(os.Environ(), env...)
	}
	if err := c.cmd.Start(); err != nil {
		_ = lf.Close()
		return nil, fmt.Errorf("loadtest: start %s: %w", path, err)
	}
	c.PID = c.cmd.Process.Pid
	go func() {
		c.waitErr = c.cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// Exited reports whether the child has exited, and its Wait error if so.
func (c *child) Exited() (bool, error) {
	select {
	case <-c.done:
		return true, c.waitErr
	default:
		return false, nil
	}
}

// Kill ends the child with SIGKILL, as a crash would: no cleanup runs. It
// returns once the child has exited.
func (c *child) Kill() {
	if exited, _ := c.Exited(); !exited {
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// Signal sends sig to the child.
func (c *child) Signal(sig os.Signal) error { return c.cmd.Process.Signal(sig) }

// Wait waits for the child to exit, at most d, and reports whether it did.
func (c *child) Wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.done:
		return true
	case <-t.C:
		return false
	}
}

// terminate sends SIGTERM, waits for the child to exit, sends SIGKILL after
// grace, and closes the log. It returns the child's exit error (nil after a
// clean exit).
func (c *child) terminate(grace time.Duration) error {
	if exited, _ := c.Exited(); !exited {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		if !c.Wait(grace) {
			_ = c.cmd.Process.Kill()
			<-c.done // Wait returns promptly once the child is killed
		}
	}
	_ = c.logFile.Close()
	return c.waitErr
}

// LogTail returns up to the last max bytes of the child's output.
func (c *child) LogTail(max int64) string {
	f, err := os.Open(c.LogPath)
	if err != nil {
		return "(log unavailable: " + err.Error() + ")"
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > max {
		_, _ = f.Seek(st.Size()-max, io.SeekStart)
	}
	b, _ := io.ReadAll(io.LimitReader(f, max))
	return string(b)
}

// errExited ends a poll at once: the process it waits for has exited.
var errExited = errors.New("loadtest: the process exited")

// poll calls f every every until it returns nil, returns an error wrapping
// errExited, or ctx ends; it then returns nil, or f's last error with
// ctx's.
func poll(ctx context.Context, every time.Duration, f func() error) error {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		err := f()
		if err == nil || errors.Is(err, errExited) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// goBuild runs `go build -o dir/name pkg` from the module root and returns
// the binary's path.
func goBuild(dir, name, pkg string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, name)
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("loadtest: go build %s: %w\n%s", pkg, err, b)
	}
	return out, nil
}
