package dashboard

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, h http.Handler, method, path string, header http.Header) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestHandlerServesFiles(t *testing.T) {
	h := Handler()
	cases := []struct {
		path, ctype, contains string
	}{
		{"/", "text/html; charset=utf-8", `<script type="module" src="/app.js">`},
		{"/index.html", "text/html; charset=utf-8", "<title>"},
		{"/hub.js", "text/javascript; charset=utf-8", "export { Hub"},
		{"/hub.classic.js", "text/javascript; charset=utf-8", "globalThis.FleetHub = FleetHub"},
		{"/app.js", "text/javascript; charset=utf-8", `from "/hub.js"`},
		{"/fleet.js", "text/javascript; charset=utf-8", "export class SortedFleet"},
		{"/style.css", "text/css; charset=utf-8", ".fleet-table"},
		{"/favicon.svg", "image/svg+xml", "<svg"},
	}
	for _, c := range cases {
		res := get(t, h, http.MethodGet, c.path, nil)
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			t.Errorf("GET %s: status %d", c.path, res.StatusCode)
			continue
		}
		if got := res.Header.Get("Content-Type"); got != c.ctype {
			t.Errorf("GET %s: Content-Type %q, want %q", c.path, got, c.ctype)
		}
		if got := res.Header.Get("Cache-Control"); got != "no-cache" {
			t.Errorf("GET %s: Cache-Control %q, want no-cache", c.path, got)
		}
		if res.Header.Get("X-Content-Type-Options") != "nosniff" || res.Header.Get("ETag") == "" {
			t.Errorf("GET %s: headers %v", c.path, res.Header)
		}
		if !strings.Contains(string(body), c.contains) {
			t.Errorf("GET %s: body lacks %q", c.path, c.contains)
		}
	}
	res := get(t, h, http.MethodGet, "/", nil)
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("index.html: Content-Security-Policy %q", csp)
	}
}

func TestHandlerNotFound(t *testing.T) {
	h := Handler()
	for _, p := range []string{"/nope", "/static/index.html", "/hub.js/", "/app", "/index.htm", "/favicon.ico", "/../dashboard.go", "/ws", "/HUB.JS"} {
		res := get(t, h, http.MethodGet, p, nil)
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", p, res.StatusCode)
		}
	}
}

func TestHandlerMethodsAndRevalidation(t *testing.T) {
	h := Handler()
	res := get(t, h, http.MethodPost, "/", nil)
	if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /: status %d, Allow %q", res.StatusCode, res.Header.Get("Allow"))
	}
	res = get(t, h, http.MethodHead, "/hub.js", nil)
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || len(body) != 0 || res.Header.Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Errorf("HEAD /hub.js: status %d, %d body bytes, type %q", res.StatusCode, len(body), res.Header.Get("Content-Type"))
	}
	etag := get(t, h, http.MethodGet, "/app.js", nil).Header.Get("ETag")
	res = get(t, h, http.MethodGet, "/app.js", http.Header{"If-None-Match": {etag}})
	if res.StatusCode != http.StatusNotModified {
		t.Errorf("GET /app.js with its ETag: status %d, want 304", res.StatusCode)
	}
}

// TestNoExternalAssets: the page works offline and under its CSP: no URL
// of another host, no inline script or style, no innerHTML.
func TestNoExternalAssets(t *testing.T) {
	external := regexp.MustCompile(`(?i)(https?|wss?):\s*//|(src|href)\s*=\s*["']?//|url\(\s*["']?(https?:)?//|@import`)
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := static.ReadFile(p)
		s := strings.ReplaceAll(string(b), `xmlns="http://www.w3.org/2000/svg"`, "")
		if m := external.FindString(s); m != "" {
			t.Errorf("%s refers to %q", p, m)
		}
		for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("} {
			if strings.Contains(s, bad) {
				t.Errorf("%s uses %s", p, bad)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	index, _ := static.ReadFile("static/index.html")
	if regexp.MustCompile(`<script>|<script [^>]*>[^<]|style="|<style`).Match(index) {
		t.Error("index.html has inline script or style, which its CSP forbids")
	}
}

func TestClassicScript(t *testing.T) {
	module, _ := static.ReadFile("static/hub.js")
	classic, ok := classicScript(module)
	if !ok {
		t.Fatalf("hub.js lacks the %q marker", exportsMarker)
	}
	if regexp.MustCompile(`(?m)^\s*(export|import)\b`).Match(classic) {
		t.Error("hub.classic.js still has import or export statements")
	}
	if !strings.HasSuffix(string(classic), "})();\n") {
		t.Error("hub.classic.js is not wrapped in a function")
	}
}

// TestHubJS runs the client's own tests (testdata/hub_test.mjs) under
// Node.js, on the embedded bytes, when node is installed.
func TestHubJS(t *testing.T) {
	assets := loadAssets()
	runNodeTest(t, "hub_test.mjs", map[string][]byte{
		"hub.mjs":        assets["/hub.js"].body,
		"hub.classic.js": assets["/hub.classic.js"].body,
	})
}

// TestFleetJS runs the tests of the fleet table's model and virtual window
// (testdata/fleet_test.mjs) under Node.js, on the embedded fleet.js.
func TestFleetJS(t *testing.T) {
	runNodeTest(t, "fleet_test.mjs", map[string][]byte{"fleet.mjs": loadAssets()["/fleet.js"].body})
}

// runNodeTest runs testdata/<test> with `node --test` in a directory that
// also holds files, when Node.js 18 or later is installed.
func runNodeTest(t *testing.T, test string, files map[string][]byte) {
	t.Helper()
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the JavaScript tests need Node.js 18 or later")
	}
	out, err := exec.Command(nodeBin, "--version").Output()
	if err != nil || !regexp.MustCompile(`^v(1[89]|[2-9]\d)\.`).Match(out) {
		t.Skipf("node %q is too old for node --test (want 18 or later)", strings.TrimSpace(string(out)))
	}
	dir := t.TempDir()
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, b := range files {
		write(name, b)
	}
	src, err := os.ReadFile(filepath.Join("testdata", test))
	if err != nil {
		t.Fatal(err)
	}
	write(test, src)
	cmd := exec.Command(nodeBin, "--test", filepath.Join(dir, test))
	cmd.Dir = dir
	done := make(chan struct{})
	var output []byte
	go func() {
		output, err = cmd.CombinedOutput()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("node --test did not finish within 60s:\n%s", output)
	}
	if err != nil {
		t.Fatalf("node --test: %v\n%s", err, output)
	}
	t.Logf("node --test:\n%s", lastLines(string(output), 10))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
