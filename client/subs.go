package client

import (
	"bytes"
	"encoding/json"
	"slices"
)

// subLog is the list of subscription changes to replay on a new session,
// in order, so that it ends up subscribed exactly as the last one was.
//
// Replaying every Subscribe and Unsubscribe would grow without bound for a
// dashboard that keeps changing what it watches, so the log is compacted,
// but only where that provably changes nothing. The hub keeps, per
// selector (a serial number, a type, a group, or all), the topics
// subscribed and the last min_priority; changes to one selector never
// touch another. Hence:
//   - an Unsubscribe with exactly the args of an earlier Subscribe, where
//     no other entry names any of its selectors, cancels it: both go;
//   - a Subscribe identical to an earlier one that is the last entry to
//     name any of its selectors changes nothing and is not recorded;
//   - an Unsubscribe that names no selector an earlier Subscribe named
//     removes nothing and is not recorded.
//
// Args that cannot be read as selectors are kept as they are and are taken
// to overlap everything.
type subLog struct {
	ops []*subOp
}

// subOp is one Subscribe or Unsubscribe.
type subOp struct {
	unsubscribe bool
	args        json.RawMessage // canonical JSON (sorted keys, compact)
	sels        []string        // the selectors named; nil when unknown
}

// selectorArgs are the selector fields of subscribe and unsubscribe args.
type selectorArgs struct {
	Devices []string `json:"devices"`
	Types   []string `json:"types"`
	Groups  []string `json:"groups"`
	All     bool     `json:"all"`
}

// newSubOp reads the selectors of canonical args.
func newSubOp(args json.RawMessage, unsubscribe bool) *subOp {
	op := &subOp{unsubscribe: unsubscribe, args: args}
	var a selectorArgs
	if err := json.Unmarshal(args, &a); err != nil {
		return op
	}
	op.sels = []string{}
	for _, d := range a.Devices {
		op.sels = append(op.sels, "sn:"+d)
	}
	for _, t := range a.Types {
		op.sels = append(op.sels, "type:"+t)
	}
	for _, g := range a.Groups {
		op.sels = append(op.sels, "group:"+g)
	}
	if a.All {
		op.sels = append(op.sels, "all")
	}
	return op
}

// overlaps reports whether a and b may name a selector in common.
func (a *subOp) overlaps(b *subOp) bool {
	if a.sels == nil || b.sels == nil {
		return true
	}
	for _, s := range a.sels {
		if slices.Contains(b.sels, s) {
			return true
		}
	}
	return false
}

// canonical re-encodes args with sorted keys, so that equal args compare
// equal whatever type or key order the caller used.
func canonical(args any) (json.RawMessage, error) {
	raw, err := encodeArgs(args)
	if err != nil || raw == nil {
		return raw, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// add records a Subscribe or Unsubscribe the hub accepted.
func (l *subLog) add(op *subOp) {
	if op.unsubscribe {
		l.unsubscribed(op)
	} else {
		l.subscribed(op)
	}
}

func (l *subLog) subscribed(op *subOp) {
	for i := len(l.ops) - 1; i >= 0; i-- {
		prev := l.ops[i]
		if !prev.overlaps(op) {
			continue
		}
		// prev is the last entry naming one of op's selectors.
		if !prev.unsubscribe && bytes.Equal(prev.args, op.args) && sameSels(prev, op) {
			return // already in force
		}
		break
	}
	l.ops = append(l.ops, op)
}

func (l *subLog) unsubscribed(op *subOp) {
	if op.sels != nil {
		for i, prev := range l.ops {
			if prev.unsubscribe || !bytes.Equal(prev.args, op.args) {
				continue
			}
			if l.alone(i) {
				l.ops = slices.Delete(l.ops, i, i+1)
				return
			}
		}
	}
	l.ops = append(l.ops, op)
	l.prune()
}

// alone reports whether no entry but the i-th names any of its selectors.
func (l *subLog) alone(i int) bool {
	for j, other := range l.ops {
		if j != i && other.overlaps(l.ops[i]) {
			return false
		}
	}
	return true
}

// sameSels reports whether a and b name the same selectors exactly; only
// then can the later one change nothing.
func sameSels(a, b *subOp) bool {
	return a.sels != nil && b.sels != nil && slices.Equal(a.sels, b.sels)
}

// prune drops the unsubscribes that no earlier subscribe overlaps: replayed
// on a fresh session they would remove nothing.
func (l *subLog) prune() {
	var kept []*subOp
	for _, op := range l.ops {
		if op.unsubscribe && !slices.ContainsFunc(kept, func(p *subOp) bool { return !p.unsubscribe && p.overlaps(op) }) {
			continue
		}
		kept = append(kept, op)
	}
	l.ops = kept
}

// drop removes op (the hub refused it on a replay).
func (l *subLog) drop(op *subOp) {
	if i := slices.Index(l.ops, op); i >= 0 {
		l.ops = slices.Delete(l.ops, i, i+1)
	}
	l.prune()
}

// list copies the entries, to replay without holding the lock.
func (l *subLog) list() []*subOp { return slices.Clone(l.ops) }
