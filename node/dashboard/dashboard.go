// Package dashboard is the admin dashboard a node serves at "/": static
// HTML, CSS and JavaScript embedded in the binary, with no external assets.
// The page logs in over the node's own /ws and shows the fleet live.
//
// It also serves the JavaScript client the page is built on, for other
// pages and scripts: /hub.js as an ES module (which also sets
// window.FleetHub), /hub.classic.js, the same code as a plain script, and
// /hub.d.ts, its TypeScript types.
package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"
)

//go:embed static
var static embed.FS

// exportsMarker starts the lines of hub.js that only an ES module may hold.
const exportsMarker = "// @module-exports"

// csp keeps the page to its own origin: scripts, styles and the WebSocket.
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".ts":   "text/plain; charset=utf-8", // hub.d.ts, for reading and for copying next to hub.js
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".json": "application/json",
}

type asset struct {
	name  string
	body  []byte
	ctype string
	etag  string
}

var loadAssets = sync.OnceValue(func() map[string]*asset {
	assets := map[string]*asset{}
	add := func(urlPath, name string, body []byte) {
		sum := sha256.Sum256(body)
		ctype := contentTypes[path.Ext(name)]
		if ctype == "" {
			ctype = "application/octet-stream"
		}
		assets[urlPath] = &asset{name: name, body: body, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, "static/")
		add("/"+name, name, body)
		if name == "index.html" {
			add("/", name, body)
		}
		if name == "hub.js" {
			if classic, ok := classicScript(body); ok {
				add("/hub.classic.js", "hub.classic.js", classic)
			}
		}
		return nil
	})
	if err != nil {
		panic("dashboard: embedded files: " + err.Error()) // cannot happen: embed.FS is in the binary
	}
	return assets
})

// classicScript turns the hub.js module into a plain script: the export
// lines after the marker go, and the rest runs in a function of its own,
// leaving window.FleetHub as its only global.
func classicScript(module []byte) ([]byte, bool) {
	i := bytes.Index(module, []byte(exportsMarker))
	if i < 0 {
		return nil, false
	}
	var b bytes.Buffer
	b.WriteString("// hub.classic.js: hub.js as a plain script; it sets window.FleetHub.\n(function () {\n\"use strict\";\n")
	b.Write(module[:i])
	b.WriteString("})();\n")
	return b.Bytes(), true
}

// Handler serves the dashboard: "/" (index.html), its scripts and styles,
// /hub.js, /hub.classic.js and /hub.d.ts. Every response carries Cache-Control
// no-cache and an ETag, so browsers revalidate cheaply and never run a
// stale page against a newer node. Unknown paths are 404, methods other
// than GET and HEAD 405.
func Handler() http.Handler {
	return handler{assets: loadAssets()}
}

type handler struct {
	assets map[string]*asset
}

func (h handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a, ok := h.assets[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", a.ctype)
	hd.Set("Cache-Control", "no-cache")
	hd.Set("ETag", a.etag)
	hd.Set("X-Content-Type-Options", "nosniff")
	if a.name == "index.html" {
		hd.Set("Content-Security-Policy", csp)
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Frame-Options", "DENY")
	}
	http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.body))
}
