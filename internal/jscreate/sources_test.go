package jscreate_test

import (
	"context"
	"testing"
	"time"

	"github.com/fleethub/fleethub/internal/jscreate"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

func TestWithSourcesKeepsOthers(t *testing.T) {
	nc := natstest.Connect(t, natstest.Run(t))
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range []string{"A", "B", "C"} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: n, Subjects: []string{"s." + n}}); err != nil {
			t.Fatal(err)
		}
	}
	agg := func(srcs ...string) jetstream.StreamConfig {
		c := jetstream.StreamConfig{Name: "AGG"}
		for _, s := range srcs {
			c.Sources = append(c.Sources, &jetstream.StreamSource{Name: s})
		}
		return c
	}
	if _, err := jscreate.WithSources(ctx, js, agg("A")); err != nil {
		t.Fatal(err)
	}
	if _, err := jscreate.WithSources(ctx, js, agg("B")); err != nil {
		t.Fatal(err)
	}
	st, err := jscreate.WithSources(ctx, js, agg("A", "C"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range st.CachedInfo().Config.Sources {
		names = append(names, s.Name)
	}
	if len(names) != 3 || names[0] != "A" || names[1] != "B" || names[2] != "C" {
		t.Fatalf("sources %v, want [A B C]", names)
	}
}

func TestSameSourceByDomain(t *testing.T) {
	a := &jetstream.StreamSource{Name: "X", Domain: "east"}
	b := &jetstream.StreamSource{Name: "X", External: &jetstream.ExternalStream{APIPrefix: "$JS.east.API"}}
	c := &jetstream.StreamSource{Name: "X"}
	if !jscreate.SameSource(a, b) || jscreate.SameSource(a, c) {
		t.Fatalf("SameSource: domain east vs its API prefix must match, vs local must not")
	}
}
