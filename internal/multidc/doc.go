// Package multidc holds experiments, as tests against real nats-server
// processes, on running the hub across several data centres: a
// supercluster over gateways and a leaf site with its own JetStream
// domain, with WAN delay and partitions from internal/wanproxy. The
// package has no code of its own; the tests are the evidence for the
// design of per-data-centre state. They run behind the load build tag
// (make load; each starts two or three server processes and holds cuts
// of up to 40 s):
//
//	go test -tags load -count=1 -v -run TestLeafSiteOwnDomain ./internal/multidc
package multidc
