package client

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/fleethub/fleethub/auth"
	"github.com/gorilla/websocket"
)

// Defaults of the Config fields left zero.
const (
	DefaultMinBackoff     = 250 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
	DefaultRequestTimeout = 10 * time.Second
)

// defaultHandshakeTimeout bounds the WebSocket handshake of the default
// dialer, so that a black-holed address cannot stall reconnection.
const defaultHandshakeTimeout = 10 * time.Second

// Config configures a Client. Zero values get the defaults named on each
// field. Exactly one of Device, Login and Token says who the client is.
type Config struct {
	// URL is the hub's WebSocket endpoint: ws://host:port/ws or wss://...
	URL string
	// URLs are further endpoints of the same hub (its other nodes).
	// Connections go round-robin over URL followed by URLs: each attempt
	// after a lost connection or a failed attempt takes the next one. At
	// least one URL is required.
	URLs []string

	// Device authenticates as a device with its derived key.
	Device *DeviceAuth
	// Login authenticates as an admin or viewer with a password. On
	// reconnection the client resumes with the token of its last login
	// while that is valid, and logs in again otherwise.
	Login *LoginAuth
	// Token authenticates as an admin or viewer with a token obtained
	// elsewhere (POST /api/login). When it expires the client stops with
	// ErrTokenExpired.
	Token string

	// Dialer opens the WebSocket connections. Nil uses a dialer with the
	// proxy from the environment, a 10 s handshake timeout and TLSConfig.
	Dialer *websocket.Dialer
	// TLSConfig is the TLS configuration of wss:// connections made by
	// the default dialer, for example to trust a private CA
	// (&tls.Config{RootCAs: pool}, pool from LoadCAFile). Nil trusts the
	// system's roots. With Dialer set, set its TLSClientConfig instead:
	// setting both is an error.
	TLSConfig *tls.Config
	// Header is sent with every WebSocket handshake (for example a
	// User-Agent). Browser-only headers such as Origin are not needed.
	Header http.Header

	// MinBackoff and MaxBackoff bound the wait before each reconnection
	// attempt: a random duration in [0, min(MaxBackoff, MinBackoff*2^n)],
	// n counting the attempts since the client was last connected (0 for
	// the first). Defaults 250ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// RequestTimeout bounds the wait for the answer to a request once it
	// is sent (a command waits its own timeout on top). Default 10s.
	RequestTimeout time.Duration

	// OnPush receives every push, in the order the hub sent them.
	OnPush func(Push)
	// OnSnapshot receives the values of every successful /admin/subscribe
	// answer ({"devices":[...]}): those of Subscribe and those of the
	// subscriptions replayed after a reconnection, before any push that
	// followed them.
	OnSnapshot func(json.RawMessage)
	// OnCommand answers the hub's command requests (devices). Each call
	// runs on a goroutine of its own, at most 16 at a time (a command
	// beyond that is answered 429 at once); its ctx ends when the
	// connection the command came on ends or the client closes, and the
	// answer then goes nowhere. Without it, commands are answered 404 "no
	// command handler".
	OnCommand func(ctx context.Context, cmd Command) Result
	// OnState is told of every change of the connection: connecting,
	// connected, disconnected (with the reason) and, last of all, closed.
	OnState func(State)

	// Logger receives the client's logs. Nil discards them.
	Logger *slog.Logger
}

// DeviceAuth is a device's identity: its serial number and the key derived
// for it from the hub's master secret (auth.DeviceKey).
type DeviceAuth struct {
	SN string
	// Key is the raw 32-byte device key (not hex): auth.DeviceKey, or
	// DeviceKeyFromHex of what `hubctl device-key SN` prints.
	Key []byte
	// Type is the type the device states; the hub's registry wins over it.
	// Empty states none.
	Type string
}

// LoginAuth is an admin's or viewer's username and password.
type LoginAuth struct {
	Username string
	Password string
}

// Validate reports every problem with the configuration at once.
func (c *Config) Validate() error {
	var errs []error
	urls := c.urls()
	if len(urls) == 0 {
		errs = append(errs, errors.New("client: URL or URLs is required"))
	}
	for _, u := range urls {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "ws" && p.Scheme != "wss") || p.Host == "" {
			errs = append(errs, fmt.Errorf("client: URL %q: want ws://host/path or wss://host/path", u))
		}
	}
	n := 0
	if c.Device != nil {
		n++
		if !auth.ValidSerial(c.Device.SN) {
			errs = append(errs, errors.New("client: Device.SN: must be 1 to 64 characters of A-Z a-z 0-9 _ -"))
		}
		if len(c.Device.Key) == 0 {
			errs = append(errs, errors.New("client: Device.Key is required"))
		}
	}
	if c.Login != nil {
		n++
		if c.Login.Username == "" || c.Login.Password == "" {
			errs = append(errs, errors.New("client: Login needs a Username and a Password"))
		}
	}
	if c.Token != "" {
		n++
	}
	if n != 1 {
		errs = append(errs, errors.New("client: exactly one of Device, Login and Token is required"))
	}
	if c.Dialer != nil && c.TLSConfig != nil {
		errs = append(errs, errors.New("client: set TLSConfig or Dialer (with its TLSClientConfig), not both"))
	}
	if c.MinBackoff < 0 || c.MaxBackoff < 0 || c.RequestTimeout < 0 {
		errs = append(errs, errors.New("client: durations must not be negative"))
	}
	if c.MinBackoff > 0 && c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff {
		errs = append(errs, errors.New("client: MinBackoff must not exceed MaxBackoff"))
	}
	return errors.Join(errs...)
}

// urls is URL followed by URLs.
func (c *Config) urls() []string {
	var out []string
	if c.URL != "" {
		out = append(out, c.URL)
	}
	return append(out, c.URLs...)
}

// withDefaults returns a copy of c with defaults filled in, sharing nothing
// the caller could change later.
func (c Config) withDefaults() Config {
	if c.Device != nil {
		d := *c.Device
		d.Key = append([]byte(nil), d.Key...)
		c.Device = &d
	}
	if c.Login != nil {
		l := *c.Login
		c.Login = &l
	}
	c.Header = c.Header.Clone()
	if c.Dialer == nil {
		c.Dialer = &websocket.Dialer{Proxy: http.ProxyFromEnvironment, HandshakeTimeout: defaultHandshakeTimeout}
		if c.TLSConfig != nil {
			// A clone: the caller may change its own later.
			c.Dialer.TLSClientConfig = c.TLSConfig.Clone()
		}
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(DefaultMaxBackoff, c.MinBackoff)
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
