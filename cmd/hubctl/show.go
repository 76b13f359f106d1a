package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/subjects"
	"github.com/nats-io/nats.go/jetstream"
)

// deviceShow is what device show prints: the registry entry, the presence
// entry and the last status, as one line of JSON.
type deviceShow struct {
	SN         string                `json:"sn"`
	Registered bool                  `json:"registered"`
	Type       string                `json:"type,omitempty"`
	Group      string                `json:"group,omitempty"`
	Online     bool                  `json:"online"`
	Presence   *schema.PresenceEntry `json:"presence"`
	Status     json.RawMessage       `json:"status"`
	StatusAt   *int64                `json:"status_at"`
}

// deviceShowCommand shows one device: is it registered, is it online and
// where, and what it last reported. A device the hub knows nothing about
// is an error, so a typo in the serial number does not pass.
var deviceShowCommand = &command{
	name:     "device show",
	synopsis: "SN",
	setup: func(*flag.FlagSet) func([]string) (*job, error) {
		return func(args []string) (*job, error) {
			sn, err := serialArg(args)
			if err != nil {
				return nil, err
			}
			return &job{run: func(ctx context.Context, c *client) error {
				return showDevice(ctx, c, sn)
			}}, nil
		}
	},
}

func showDevice(ctx context.Context, c *client, sn string) error {
	out := deviceShow{SN: sn, Status: json.RawMessage("null")}
	if kv, err := c.bucket(ctx, schema.BucketDevices, false); err == nil {
		if e, err := kv.Get(ctx, sn); err == nil {
			var d schema.Device
			if err := json.Unmarshal(e.Value(), &d); err != nil {
				return fmt.Errorf("bucket %s: key %s holds invalid JSON: %w", schema.BucketDevices, sn, err)
			}
			out.Registered, out.Type, out.Group = true, d.Type, d.Group
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return err
		}
	} else if !errors.Is(err, errNoBucket) {
		return err
	}
	if kv, err := c.bucket(ctx, schema.BucketPresence, false); err == nil {
		if e, err := kv.Get(ctx, sn); err == nil {
			var pe schema.PresenceEntry
			if err := json.Unmarshal(e.Value(), &pe); err != nil {
				return fmt.Errorf("bucket %s: key %s holds invalid JSON: %w", schema.BucketPresence, sn, err)
			}
			out.Online, out.Presence = true, &pe
			if out.Type == "" {
				out.Type, out.Group = pe.Type, pe.Group
			}
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return err
		}
	} else if !errors.Is(err, errNoBucket) {
		return err
	}
	if err := lastStatus(ctx, c, sn, &out); err != nil {
		return err
	}
	if !out.Registered && !out.Online && out.StatusAt == nil {
		return fmt.Errorf("device %s is not registered, not online and has no status", sn)
	}
	b, _ := json.Marshal(out)
	_, err := fmt.Fprintln(c.out, string(b))
	return err
}

// lastStatus reads the device's last status record from HUB_STATUS, by
// subject; a missing stream or record leaves the status null.
func lastStatus(ctx context.Context, c *client, sn string, out *deviceShow) error {
	subj, err := subjects.DeviceStatus(sn)
	if err != nil {
		return err
	}
	if c.js == nil { // opened by bucket; ensure it even when no bucket exists
		if _, err := c.bucket(ctx, schema.BucketDevices, false); err != nil && !errors.Is(err, errNoBucket) {
			return err
		}
	}
	stream, err := c.js.Stream(ctx, schema.StreamStatus)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", schema.StreamStatus, err)
	}
	m, err := stream.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", schema.StreamStatus, err)
	}
	var rec schema.StatusRecord
	if err := json.Unmarshal(m.Data, &rec); err != nil {
		return fmt.Errorf("stream %s: invalid record: %w", schema.StreamStatus, err)
	}
	out.Status, out.StatusAt = rec.Status, &rec.At
	if out.Type == "" {
		out.Type, out.Group = rec.Type, rec.Group
	}
	return nil
}
