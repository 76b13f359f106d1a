package presence

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// LastMessages returns each subject's last message once, leaves out the
// subjects with none, and refuses more than one batch takes.
func TestLastMessages(t *testing.T) {
	t.Parallel()
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, AllowDirect: true}); err != nil {
		t.Fatal(err)
	}
	var subjs []string
	for i := range 600 {
		subj := fmt.Sprintf("t.%d", i)
		subjs = append(subjs, subj)
		if i%3 == 0 {
			continue // no message
		}
		for k := range 2 {
			if _, err := js.Publish(ctx, subj, fmt.Appendf(nil, "%d-%d", i, k)); err != nil {
				t.Fatal(err)
			}
		}
	}
	got := map[string]string{}
	err = LastMessages(ctx, nc, "T", subjs, func(subj string, seq uint64, _ nats.Header, data []byte) {
		if _, dup := got[subj]; dup || seq == 0 {
			t.Errorf("%s: again, or sequence %d", subj, seq)
		}
		got[subj] = string(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 400 {
		t.Fatalf("%d subjects answered, want 400", len(got))
	}
	for i := range 600 {
		want := ""
		if i%3 != 0 {
			want = fmt.Sprintf("%d-1", i)
		}
		if g := got[fmt.Sprintf("t.%d", i)]; g != want {
			t.Fatalf("t.%d: %q, want %q", i, g, want)
		}
	}
	if err := LastMessages(ctx, nc, "T", []string{"t.0", "t.3"}, func(string, uint64, nats.Header, []byte) {
		t.Error("a subject with no message answered")
	}); err != nil {
		t.Fatal(err)
	}
	if err := LastMessages(ctx, nc, "T", make([]string, MaxBatch+1), nil); err != ErrBatchTooLarge {
		t.Fatalf("too many subjects: %v", err)
	}
}

func TestSplitIndexKey(t *testing.T) {
	for _, tc := range []struct {
		key, node, sn string
		ok            bool
	}{
		{IndexKey("node-a", "D-1"), "node-a", "D-1", true},
		{IndexKey("eu.node-a", "D-1"), "eu.node-a", "D-1", true},
		{"D-1", "", "", false},
		{".D-1", "", "", false},
		{"node-a.", "", "", false},
	} {
		node, sn, ok := SplitIndexKey(tc.key)
		if node != tc.node || sn != tc.sn || ok != tc.ok {
			t.Errorf("SplitIndexKey(%q) = %q, %q, %v", tc.key, node, sn, ok)
		}
	}
}
