package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// ReadSecretFile reads a secret (a password, a master secret) from the
// file path that flag names. One trailing line break is not part of the
// secret, so `echo secret > file` works; an empty secret is an error. The
// error is one line naming the flag and the file, never the content.
func ReadSecretFile(flag, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return "", fmt.Errorf("--%s %s: %w", flag, path, err)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if s == "" {
		return "", fmt.Errorf("--%s %s: the file is empty", flag, path)
	}
	return s, nil
}

// SecretFromFile resolves a secret that may be given directly (flag value
// direct, from the command line or its HUB_* variable) or in a file
// (fileFlag, path): at most one of the two. It returns the secret, empty
// when neither is given.
func SecretFromFile(flag, direct, fileFlag, path string) (string, error) {
	if path == "" {
		return direct, nil
	}
	if direct != "" {
		return "", fmt.Errorf("--%s and --%s both given (or their %s, %s variables): give one", flag, fileFlag, EnvName(flag), EnvName(fileFlag))
	}
	return ReadSecretFile(fileFlag, path)
}
