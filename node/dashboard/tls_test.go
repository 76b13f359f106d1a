package dashboard

import "testing"

// TestHubJSTLS runs testdata/hub_tls_test.mjs under Node.js on the
// embedded hub.js: the wss: URLs it derives and accepts.
func TestHubJSTLS(t *testing.T) {
	runNodeTest(t, "hub_tls_test.mjs", map[string][]byte{"hub.mjs": loadAssets()["/hub.js"].body})
}
