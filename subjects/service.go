package subjects

import (
	"fmt"
	"strings"
)

// maxPathDepth bounds the number of segments of a service path.
const maxPathDepth = 16

// ValidPath reports whether p is a service path that maps to a subject:
// "/a/b" with at least one segment, each a valid token, no empty segment.
func ValidPath(p string) bool {
	_, err := pathTokens(p)
	return err == nil
}

func pathTokens(p string) ([]string, error) {
	if len(p) < 2 || p[0] != '/' || len(p) > maxToken {
		return nil, fmt.Errorf("%w: %q", ErrBadPath, p)
	}
	segs := strings.Split(p[1:], "/")
	if len(segs) > maxPathDepth {
		return nil, fmt.Errorf("%w: %q has more than %d segments", ErrBadPath, p, maxPathDepth)
	}
	for _, s := range segs {
		if !ValidToken(s) {
			return nil, fmt.Errorf("%w: %q has an invalid segment %q", ErrBadPath, p, s)
		}
	}
	return segs, nil
}

// Service is the request subject of a service the hub does not serve
// itself: "/a/b" becomes "hub.svc.a.b".
func Service(path string) (string, error) {
	segs, err := pathTokens(path)
	if err != nil {
		return "", err
	}
	return Prefix + ".svc." + strings.Join(segs, "."), nil
}

// ServicePath is the inverse of Service.
func ServicePath(subject string) (string, error) {
	rest, ok := strings.CutPrefix(subject, Prefix+".svc.")
	// A '/' in a token would read as a segment break: "hub.svc.a/b" is not
	// what Service("/a/b") builds.
	if !ok || rest == "" || strings.Contains(rest, "/") {
		return "", fmt.Errorf("%w: %q is not a service subject", ErrBadPath, subject)
	}
	p := "/" + strings.ReplaceAll(rest, ".", "/")
	if _, err := pathTokens(p); err != nil {
		return "", err
	}
	return p, nil
}
