//go:build browser

package dashboard_test

import (
	"os"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/fleethub/fleethub/hub"
	"github.com/fleethub/fleethub/internal/hubtest"
	"github.com/fleethub/fleethub/internal/natstest"
	"github.com/fleethub/fleethub/internal/testpki"
	"github.com/fleethub/fleethub/node"
	"github.com/fleethub/fleethub/node/dashboard"
)

// TestDashboardOverHTTPS loads the dashboard from a node serving TLS (a
// certificate of a CA made for the test; Chromium is told to accept it)
// and signs in. The node serves no plaintext on that port, so the page's
// connection, derived by hub.js from the https page, is wss.
func TestDashboardOverHTTPS(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("the browser test needs Debian's chromium at %s (apt-get install -y chromium): %v", chromiumPath, err)
	}
	ca := testpki.NewCA(t)
	leaf := ca.Server(t, "hub")
	n := hubtest.StartNode(t, natstest.Run(t), "n1", hubtest.TLS(leaf.CertFile, leaf.KeyFile),
		func(_ *hub.Config, nc *node.Config) { nc.Dashboard = dashboard.Handler() })
	base := "https://" + n.Serve(t)
	dev := hubtest.Device(t, n, "TLS-1001", "retail")
	dev.MustOK("/device/status", status(0, "Level 1", 0, "all sensors ok", 0, "bin 20%", 77))

	ctx := startBrowser(t, chromedp.Flag("ignore-certificate-errors", true))
	step := stepper(t, ctx)
	waitFor := waiter(t, ctx)
	step("open the page over https",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS("#login-user"), "admin"),
		chromedp.SendKeys(chromedp.CSS("#login-pass"), hubtest.AdminPassword),
		chromedp.Click(chromedp.CSS("#login-submit")),
	)
	waitFor("the page is served over https", `location.protocol === 'https:'`)
	waitFor("the page is connected", `document.querySelector('#conn').dataset.state === 'connected' && !document.querySelector('#app-view').hidden`)
	waitFor("the device is listed", `document.querySelector('#fleet-body tr[data-sn="TLS-1001"]')`)
	dev.MustOK("/device/status", status(0, "Level 1", 0, "all sensors ok", 0, "bin 20%", 76))
	waitFor("a live push arrives over wss", `document.querySelector('#fleet-body tr[data-sn="TLS-1001"]').cells[4].textContent === '76%'`)
	if p := consoleProblems(); len(p) > 0 {
		t.Errorf("console: %q", p)
	}
}
