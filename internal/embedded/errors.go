package embedded

// ConfigError is a configuration the node must not start with: the
// embedded server would be open to anyone who reaches it, or the node
// cannot tell how its own connection should authenticate. Its message is
// one line that names the flag to set or change; cmd/hub prints it and
// exits 2.
type ConfigError struct {
	// Flag is the flag to set or change, for example "--nats-listen".
	Flag string
	msg  string
}

func (e *ConfigError) Error() string { return e.msg }

func configErr(flag, msg string) *ConfigError { return &ConfigError{Flag: flag, msg: msg} }
