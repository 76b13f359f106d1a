package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
)

// maxLoginBody bounds a POST /api/login body.
const maxLoginBody = 4096

// readLogin reads the body of POST /api/login: exactly one JSON object, at
// most maxLoginBody bytes, sent as application/json. Otherwise it answers
// (415 for another content type, 413 for a body over the limit, 408 for a
// body that did not arrive within ReadTimeout, 400 for anything else) and
// reports false.
//
// Requiring application/json keeps the endpoint out of reach of plain HTML
// forms and of the "simple" cross-origin requests a browser sends without
// a preflight (text/plain, form encodings).
func readLogin(w http.ResponseWriter, r *http.Request) (loginRequest, bool) {
	var req loginRequest
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"msg": "Content-Type must be application/json"})
		return req, false
	}
	body := http.MaxBytesReader(w, r.Body, maxLoginBody)
	dec := json.NewDecoder(body)
	err := dec.Decode(&req)
	if err == nil {
		// One object and nothing after it but white space.
		if _, terr := dec.Token(); terr != io.EOF {
			err = errTrailing
			if terr != nil && !isSyntax(terr) {
				err = terr
			}
		}
	}
	if err == nil {
		return req, true
	}
	var tooBig *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &tooBig):
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"msg": fmt.Sprintf("body larger than %d bytes", maxLoginBody)})
	case errors.As(err, &ne) && ne.Timeout():
		writeJSON(w, http.StatusRequestTimeout, map[string]string{"msg": "body not received in time"})
	case errors.Is(err, errTrailing):
		writeJSON(w, http.StatusBadRequest, map[string]string{"msg": "body must be one JSON object {\"username\",\"password\"} and nothing after it"})
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"msg": "body must be JSON {\"username\",\"password\"}"})
	}
	return req, false
}

var errTrailing = errors.New("node: data after the JSON object")

func isSyntax(err error) bool {
	var se *json.SyntaxError
	return errors.As(err, &se)
}
