package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/nats-io/nats.go/jetstream"
)

// onlineReaders bounds the presence entries read at once: one request per
// key, so a large fleet must not be read one round trip at a time.
const onlineReaders = 32

// onlineCommand prints the devices online now, one "SN TYPE GROUP NODE
// SINCE" line each, sorted by serial number, from the hub_presence bucket.
// SINCE is when the device's session began, in RFC 3339 (UTC). No field
// holds a space; one that is unknown prints as "-".
var onlineCommand = &command{
	name:     "online",
	synopsis: "",
	setup: func(*flag.FlagSet) func([]string) (*job, error) {
		return func(args []string) (*job, error) {
			if err := wantArgs(args); err != nil {
				return nil, err
			}
			return &job{run: listOnline}, nil
		}
	},
}

// onlineDevice is one line of online's output.
type onlineDevice struct {
	sn    string
	entry schema.PresenceEntry
	found bool // false: the entry went away between listing and reading
	err   error
}

func listOnline(ctx context.Context, c *client) error {
	kv, err := c.bucket(ctx, schema.BucketPresence, false)
	if errors.Is(err, errNoBucket) {
		return nil // no node has ever run: nothing is online
	}
	if err != nil {
		return err
	}
	keys, err := presenceKeys(ctx, kv)
	if err != nil {
		return err
	}
	devices := make([]onlineDevice, len(keys))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(onlineReaders, len(keys)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				devices[i] = readPresence(ctx, kv, keys[i])
			}
		}()
	}
	for i := range keys {
		next <- i
	}
	close(next)
	wg.Wait()

	// Everything is read before anything is printed: a failure prints
	// nothing but its reason.
	reg := registryLookup{c: c}
	var lines []string
	for _, d := range devices {
		if d.err != nil {
			return d.err // the first in key order, so the report is stable
		}
		if !d.found {
			continue // gone offline since the listing
		}
		e := d.entry
		typ, group := e.Type, e.Group
		if typ == "" || group == "" {
			// Written by a node that predates type and group in entries.
			dev, err := reg.get(ctx, d.sn)
			if err != nil {
				return err
			}
			typ, group = cmp.Or(typ, dev.Type), cmp.Or(group, dev.Group)
		}
		since := "-"
		if e.Since > 0 {
			since = time.UnixMilli(e.Since).UTC().Format(time.RFC3339)
		}
		lines = append(lines, strings.Join([]string{d.sn, dash(typ), dash(group), dash(e.Node), since}, " "))
	}
	for _, l := range lines {
		if _, err := fmt.Fprintln(c.out, l); err != nil {
			return err
		}
	}
	return nil
}

// presenceKeys lists the bucket's keys, sorted and without duplicates (a
// key written during the listing may be reported twice).
func presenceKeys(ctx context.Context, kv jetstream.KeyValue) ([]string, error) {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("read bucket %s: %w", schema.BucketPresence, err)
	}
	defer func() { _ = lister.Stop() }()
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	// The lister ends its channel early, and silently, when ctx ends.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read bucket %s: %w", schema.BucketPresence, err)
	}
	slices.Sort(keys)
	return slices.Compact(keys), nil
}

func readPresence(ctx context.Context, kv jetstream.KeyValue, sn string) onlineDevice {
	d := onlineDevice{sn: sn}
	e, err := kv.Get(ctx, sn)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return d
	}
	if err != nil {
		d.err = fmt.Errorf("read bucket %s: key %s: %w", schema.BucketPresence, sn, err)
		return d
	}
	if err := json.Unmarshal(e.Value(), &d.entry); err != nil {
		d.err = fmt.Errorf("bucket %s: key %s holds invalid JSON: %w", schema.BucketPresence, sn, err)
		return d
	}
	d.found = true
	return d
}

// registryLookup reads hub_devices for the entries that lack a type or
// group, opening the bucket on first use.
type registryLookup struct {
	c      *client
	kv     jetstream.KeyValue
	opened bool
}

// get returns the device's registry entry, or a zero one when the device
// is not registered (or its entry is unreadable: online still lists it).
func (r *registryLookup) get(ctx context.Context, sn string) (schema.Device, error) {
	if !r.opened {
		kv, err := r.c.bucket(ctx, schema.BucketDevices, false)
		if err != nil && !errors.Is(err, errNoBucket) {
			return schema.Device{}, err
		}
		r.kv, r.opened = kv, true
	}
	var d schema.Device
	if r.kv == nil {
		return d, nil
	}
	e, err := r.kv.Get(ctx, sn)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return d, nil
	}
	if err != nil {
		return d, fmt.Errorf("read device %s: %w", sn, err)
	}
	_ = json.Unmarshal(e.Value(), &d)
	return d, nil
}

// dash stands in for an empty field, so that every line has five fields.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
