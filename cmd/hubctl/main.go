// Command hubctl is the operator's tool for a fleethub system: it provisions
// device keys, edits the device registry and the user store, and pushes or
// sends commands to devices, all by joining the hub's NATS system (see
// section 7 of the protocol).
//
// Every flag may stand before or after the positional arguments and may
// also come from an environment variable HUB_<FLAG>, for example
// HUB_NATS_URL or HUB_MASTER_SECRET; the command line wins over the
// environment. Exit status is 0 on success, 2 for a usage error and 1 for
// any other failure, always with a single line on stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/fleethub/fleethub/hub/schema"
	"github.com/fleethub/fleethub/internal/cli"
	"github.com/fleethub/fleethub/internal/natsconn"
	"github.com/fleethub/fleethub/subjects"
)

// defaultNATSURL is where hubctl looks for NATS when neither --nats-url nor
// HUB_NATS_URL says otherwise: the client address of a node's embedded
// server (cmd/hub's --nats-listen default).
const defaultNATSURL = "nats://127.0.0.1:4222"

// budget bounds a whole invocation, connecting included, so that a script
// calling hubctl never hangs on an unreachable or stuck NATS system. cmd
// adds its own --timeout on top.
const budget = 10 * time.Second

// command is one subcommand. setup declares its flags on fs and returns
// prepare, which checks the positional arguments and the flag values and
// builds the job. Everything prepare rejects is a usage error, and prepare
// runs before any connection is made, so a mistyped command fails fast and
// with exit status 2 even when NATS is down.
type command struct {
	name     string // as typed: "device add"
	synopsis string // arguments and flags, for the usage text
	setup    func(fs *flag.FlagSet) (prepare func(args []string) (*job, error))
}

// job is a validated command, ready to run.
type job struct {
	// extra is added to the overall budget (cmd waits up to its --timeout
	// for the device, on top of the time needed to reach it).
	extra time.Duration
	// endless marks a command that runs until interrupted (tail): it has
	// no overall budget, and SIGINT or SIGTERM ends it with status 0.
	endless bool
	run     func(ctx context.Context, c *client) error
}

// commands lists every subcommand, in the order the usage text shows them.
var commands = []*command{
	deviceKeyCommand,
	deviceAddCommand,
	deviceListCommand,
	deviceShowCommand,
	deviceRmCommand,
	userAddCommand,
	userListCommand,
	userPasswdCommand,
	userRmCommand,
	pushCommand,
	cmdCommand,
	kickCommand,
	onlineCommand,
	tailCommand,
	loginCommand, // TLS on the WebSocket edge: login.go
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run is the whole program with its streams and arguments passed in, so
// tests can run it in-process. It returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	return runCtx(context.Background(), args, stdout, stderr)
}

// runCtx is run under ctx: cancelling ctx ends the command, which is how
// tests stop an endless one.
func runCtx(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	// The connection flags (--nats-url, --nats-creds, ...: natsconn.go).
	var conn natsconn.Config
	global := newFlagSet("hubctl")
	conn.Register(global, defaultNATSURL)
	conn.RegisterInbox(global, schema.OperatorInboxPrefix)
	conn.RegisterJSDomain(global)
	showVersion := global.Bool("version", false, "print the version on standard output and exit")
	if err := cli.ApplyEnv(global, cli.Env); err != nil {
		return fail(stderr, usageError{err})
	}
	// The global flags end at the command name; the command's own flag set
	// takes everything after it, the connection flags included.
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stderr)
			return 0
		}
		return fail(stderr, usageError{err})
	}
	if *showVersion {
		fmt.Fprintln(stdout, "hubctl", cli.Version())
		return 0
	}
	rest := global.Args()
	if len(rest) == 0 {
		printUsage(stderr)
		return 2
	}
	if rest[0] == "help" {
		printUsage(stderr)
		return 0
	}
	cmd, cmdArgs, err := lookup(rest)
	if errors.Is(err, flag.ErrHelp) {
		printUsage(stderr)
		return 0
	}
	if err != nil {
		return fail(stderr, err)
	}

	fs := newFlagSet("hubctl " + cmd.name)
	prepare := cmd.setup(fs)
	if err := cli.ApplyEnv(fs, cli.Env); err != nil {
		return fail(stderr, usagef("%s: %v", cmd.name, err))
	}
	// Declared after ApplyEnv on purpose: HUB_NATS_URL and the other
	// connection variables were applied to the global flags already, and
	// applying them again here would override a --nats-url given before
	// the command name. The values so far are put back by hand so that -h
	// shows the documented defaults, never a URL or password from the
	// environment.
	sofar := conn
	conn.Register(fs, defaultNATSURL)
	conn.RegisterInbox(fs, schema.OperatorInboxPrefix)
	conn.RegisterJSDomain(fs)
	conn = sofar
	pos, err := cli.Parse(fs, cmdArgs)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stderr, "usage: hubctl "+strings.TrimSpace(cmd.name+" "+cmd.synopsis))
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		return 0
	}
	if err != nil {
		return fail(stderr, usagef("%s: %v", cmd.name, err))
	}
	if strings.Contains(cmd.name, " ") && len(pos) > 0 {
		// The action of a group: lookup found it as the first positional
		// argument, with the same flags, so it is the first here too.
		pos = pos[1:]
	}
	j, err := prepare(pos)
	if err != nil {
		return fail(stderr, usagef("%s: %v", cmd.name, err))
	}
	// A missing creds file or a wrong kind of key is a usage error, found
	// before any dial.
	natsOpts, err := conn.Options()
	if err != nil {
		return fail(stderr, usagef("%s: %v", cmd.name, err))
	}
	if err := checkInbox(conn.Inbox); err != nil {
		return fail(stderr, usagef("%s: %v", cmd.name, err))
	}
	if conn.JSDomain != "" && !subjects.ValidToken(conn.JSDomain) {
		return fail(stderr, usagef("%s: --js-domain %q: want a subject token (no '.', '*', '>' or space)", cmd.name, conn.JSDomain))
	}

	var cancel context.CancelFunc
	if j.endless {
		ctx, cancel = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	} else {
		ctx, cancel = context.WithTimeout(ctx, budget+j.extra)
	}
	defer cancel()
	c := &client{url: conn.URL, opts: natsOpts, inbox: conn.Inbox, jsDomain: conn.JSDomain, out: stdout, abort: cancel}
	defer c.close()
	if err := j.run(ctx, c); err != nil {
		return fail(stderr, c.explain(err))
	}
	return 0
}

// lookup finds the command that rest (the command line after the global
// flags) names, and the arguments to parse with its flag set. A group
// ("device", "user") takes its action from its first positional argument,
// which may come after flags (hubctl device --type t add SN): to find it,
// the arguments are parsed once with every flag of the group, so that flag
// values are not mistaken for the action.
func lookup(rest []string) (*command, []string, error) {
	name, args := rest[0], rest[1:]
	var group []*command
	for _, c := range commands {
		if c.name == name {
			return c, args, nil
		}
		if first, _, _ := strings.Cut(c.name, " "); first == name {
			group = append(group, c)
		}
	}
	if len(group) == 0 {
		return nil, nil, usagef("unknown command %q (run hubctl help)", name)
	}
	union := newFlagSet("hubctl " + name)
	unionConn := new(natsconn.Config)
	unionConn.Register(union, "")
	unionConn.RegisterInbox(union, "")
	// -h is an ordinary flag here, so that "device add -h" still finds its
	// action and reaches the help of "device add".
	help := union.Bool("h", false, "")
	union.BoolVar(help, "help", false, "")
	var actions []string
	for _, c := range group {
		fs := newFlagSet(c.name)
		c.setup(fs)
		fs.VisitAll(func(f *flag.Flag) {
			if union.Lookup(f.Name) == nil {
				union.Var(f.Value, f.Name, f.Usage)
			}
		})
		_, action, _ := strings.Cut(c.name, " ")
		actions = append(actions, action)
	}
	pos, err := cli.Parse(union, args)
	if err != nil {
		return nil, nil, usagef("%s: %v", name, err)
	}
	if len(pos) == 0 && *help {
		return nil, nil, flag.ErrHelp
	}
	if len(pos) == 0 {
		return nil, nil, usagef("%s: missing subcommand (%s)", name, strings.Join(actions, ", "))
	}
	for _, c := range group {
		if c.name == name+" "+pos[0] {
			return c, args, nil
		}
	}
	return nil, nil, usagef("%s: unknown subcommand %q (want %s)", name, pos[0], strings.Join(actions, ", "))
}

// newFlagSet returns a silent flag set: the flag package would print its
// error and the whole flag list, and hubctl reports one line instead.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// wantArgs checks that args holds exactly the named positional arguments.
func wantArgs(args []string, names ...string) error {
	if len(args) < len(names) {
		return fmt.Errorf("missing %s", strings.Join(names[len(args):], " "))
	}
	if len(args) > len(names) {
		return fmt.Errorf("unexpected argument %q", args[len(names)])
	}
	return nil
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: hubctl [--nats-url URL] [CONNECTION FLAGS] COMMAND [ARGUMENTS] [FLAGS]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	for _, c := range commands {
		fmt.Fprintln(w, "  "+strings.TrimSpace(c.name+" "+c.synopsis))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Flags may come before or after the arguments. Each flag may also be set")
	fmt.Fprintln(w, "with an environment variable HUB_<FLAG>: --nats-url is HUB_NATS_URL")
	fmt.Fprintf(w, "(default %s), --master-secret is HUB_MASTER_SECRET.\n", defaultNATSURL)
	fmt.Fprintln(w, "Connection flags: --nats-creds FILE, --nats-nkey FILE, --nats-user U with")
	fmt.Fprintln(w, "--nats-password-file FILE (or HUB_NATS_PASSWORD), --nats-tls-ca FILE,")
	fmt.Fprintln(w, "--nats-tls-cert FILE --nats-tls-key FILE.")
	fmt.Fprintln(w, "hubctl COMMAND -h describes a command's flags.")
}
