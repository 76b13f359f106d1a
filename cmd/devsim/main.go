// Command devsim simulates a fleet of robots against a fleethub hub, or
// load-tests it.
//
// Simulation (the default) runs --devices robots of the four types
// (retail, dance_robot, dance_dog, rubbish) spread over a few sites. Each
// authenticates with the key derived from the master secret, reports a
// drifting status (battery, location, inspection faults, bin fill) every
// --status-interval, raises random events at --event-rate, answers
// /cmd/dance, /cmd/move ({"to":"dock"} or one of its site's locations),
// /cmd/dock and /cmd/stop, reports every push it receives as a
// push_received event with the push's id and service, and now and then
// drops its connection and comes back (--disconnect-rate). It runs until
// SIGINT or SIGTERM, or for --duration.
//
// Load mode (--load) connects --devices devices as fast as --concurrency
// allows, then has each report status every --status-interval for
// --duration (default 10s), and prints the connect rate and latencies, the
// status round-trip latencies and the errors by code: a table, or JSON with
// --json.
//
// --register writes the simulated devices' registry entries (type and
// group, as --print-registry prints them) into the hub's hub_devices
// bucket over NATS, joined with the --nats-* connection flags (creds,
// nkey, user and password, TLS) as hubctl joins it, and exits.
//
// Every flag may also come from an environment variable HUB_<FLAG>, for
// example HUB_MASTER_SECRET or HUB_URL; the command line wins. Exit status
// is 0 on success, 2 for a usage error and 1 for any other failure.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/fleethub/fleethub/internal/cli"
	"github.com/fleethub/fleethub/internal/natsconn"
)

// devMasterSecret is the fixed, public master secret of `hub --dev`.
const devMasterSecret = "fleethub-dev-master-secret-do-not-use-in-production"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], cli.Env, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the flags that do not go straight into a Config.
type options struct {
	urls, masterSecret, logLevel string
	dev, printRegistry           bool
	registerOptions
	tlsCA string // TLS on the WebSocket edge (tls.go)
}

// run is devsim: it parses args (and the HUB_* variables env finds), runs
// until ctx ends, and returns the exit status.
func run(ctx context.Context, args []string, env func(string) (string, bool), stdout, stderr io.Writer) int {
	var o options
	var cfg Config
	fs := flag.NewFlagSet("devsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: devsim [flags]           simulate a fleet until interrupted\n"+
			"       devsim --load [flags]    load-test a hub and print a report\n\nflags (also HUB_<FLAG> variables):\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.urls, "url", "ws://127.0.0.1:8080/ws", "the hub's WebSocket URL; several nodes comma-separated")
	fs.IntVar(&cfg.Devices, "devices", 12, fmt.Sprintf("how many devices (at most %d)", maxDevices))
	fs.StringVar(&cfg.Prefix, "prefix", "SIM-", "serial number prefix: PREFIX0001, PREFIX0002...")
	fs.StringVar(&o.masterSecret, "master-secret", "", "the hub's master secret, from which device keys derive (required unless --dev)")
	fs.BoolVar(&o.dev, "dev", false, "use the public master secret of `hub --dev`")
	fs.DurationVar(&cfg.StatusInterval, "status-interval", 2*time.Second, "status report period per device, jittered ±20%")
	fs.Float64Var(&cfg.EventRate, "event-rate", 2, "random events per device per minute (simulation; ~80% normal, ~17% high, ~3% emergency)")
	fs.Float64Var(&cfg.DisconnectRate, "disconnect-rate", 6, "random disconnects per device per hour, back after 1-8s (simulation)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "how long to run; 0: until interrupted (simulation), 10s (load mode)")
	fs.BoolVar(&cfg.Load, "load", false, "load mode: connect every device, measure, print a report")
	fs.IntVar(&cfg.Concurrency, "concurrency", 64, "connections opened at once (load mode)")
	fs.BoolVar(&cfg.JSON, "json", false, "print the load report as JSON (load mode)")
	fs.BoolVar(&o.printRegistry, "print-registry", false, "print the hubctl commands that register the simulated devices with their types and groups, and exit")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	// --register, its connection to NATS (--nats-*), and the secret file.
	o.registerOptions.flags(fs)
	// TLS on the WebSocket edge (tls.go).
	fs.StringVar(&o.tlsCA, "tls-ca", "", "PEM file of the CA to trust for wss:// URLs (instead of the system's roots)")
	showVersion := fs.Bool("version", false, "print the version on standard output and exit")
	if code, ok := cli.ParseFlags("devsim", fs, args, env, stderr); !ok {
		return code
	}
	if *showVersion {
		fmt.Fprintln(stdout, "devsim", cli.Version())
		return 0
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintf(stderr, "devsim: --log-level %q: want debug, info, warn or error\n", o.logLevel)
		return 2
	}
	for _, u := range strings.Split(o.urls, ",") {
		if u = strings.TrimSpace(u); u != "" {
			cfg.URLs = append(cfg.URLs, u)
		}
	}
	natsOpts, err := o.registerOptions.load(&o.masterSecret)
	if err != nil {
		fmt.Fprintln(stderr, "devsim:", err)
		return 2
	}
	cfg.MasterSecret = []byte(o.masterSecret)
	if o.dev && o.masterSecret == "" {
		cfg.MasterSecret = []byte(devMasterSecret)
	}
	if o.printRegistry || o.register {
		cfg.MasterSecret = []byte("unused") // registering needs no key
	}
	var errs []error
	if cfg.TLS, err = loadTLS(o.tlsCA); err != nil {
		errs = append(errs, err)
	}
	if err := cfg.validate(); err != nil {
		errs = append(errs, err)
	}
	if cfg.JSON && !cfg.Load {
		errs = append(errs, errors.New("--json: only with --load"))
	}
	if o.register && o.printRegistry {
		errs = append(errs, errors.New("--register and --print-registry: give one"))
	}
	if err := errors.Join(errs...); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(stderr, "devsim:", line)
		}
		return 2
	}
	if o.printRegistry {
		for i := range cfg.Devices {
			typ, s := kind(i)
			fmt.Fprintf(stdout, "hubctl device add %s --type %s --group %s\n", cfg.serial(i), typ, s.group)
		}
		return 0
	}
	if o.register {
		n, err := register(ctx, cfg, o.nats.URL, natsOpts)
		if err != nil {
			fmt.Fprintln(stderr, "devsim: --register:", err)
			return 1
		}
		fmt.Fprintf(stdout, "registered %d devices in %s\n", n, natsconn.Redact(o.nats.URL))
		return 0
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if cfg.StatusInterval < minStatusInterval {
		log.Warn("status interval below the hub's storm limit of 10 reports/s per device: expect 429s", "status_interval", cfg.StatusInterval)
	}
	cfg.Logger, cfg.Out = log, stdout
	if err := Run(ctx, cfg); err != nil {
		log.Error("devsim failed", "err", err)
		return 1
	}
	return 0
}
