package client

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// ReportStatus sends the device's current status (/device/status): an
// object whose known fields (location, inspection, rubbish, electricity)
// are each {"code":int,"msg":string} plus free fields. It returns once the
// hub has stored it. A 503 *Error means the record was not stored: send it
// again.
func (c *Client) ReportStatus(ctx context.Context, status any) error {
	_, err := c.Request(ctx, "/device/status", status)
	return err
}

// ReportEvent sends an event (/device/event). priority is emergency, high
// or normal ("" for normal); data may be nil. Like ReportStatus, it returns
// once the hub has stored the record.
func (c *Client) ReportEvent(ctx context.Context, event, priority string, data any) error {
	args := map[string]any{"event": event}
	if priority != "" {
		args["priority"] = priority
	}
	if data != nil {
		args["data"] = data
	}
	_, err := c.Request(ctx, "/device/event", args)
	return err
}

// Ping asks the hub for its clock (/ping), which any session may do.
func (c *Client) Ping(ctx context.Context) (time.Time, error) {
	r, err := c.Request(ctx, "/ping", nil)
	if err != nil {
		return time.Time{}, err
	}
	var v struct {
		ServerTimeMS int64 `json:"server_time_ms"`
	}
	if err := json.Unmarshal(r.Values, &v); err != nil {
		return time.Time{}, fmt.Errorf("client: /ping: unreadable answer: %w", err)
	}
	return time.UnixMilli(v.ServerTimeMS), nil
}
