package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/pgdr/pgdr/pkg/testutil"
)

// chromiumPath is Debian's chromium (scripts/ci-deps.sh installs it).
const chromiumPath = "/usr/bin/chromium"

// uiURL is coordinator i's status page (scripts/lab.sh: ui at base+10i+5).
func (l *lab) uiURL(i int, path string) string {
	return fmt.Sprintf("https://127.0.0.1:%d%s", l.base+10*i+5, path)
}

// spkiHashes are the base64 SHA-256 of the public keys of the lab's CA and
// coordinator certificates: Chromium's --ignore-certificate-errors-spki-list
// trusts exactly these (the lab's own CA, not every certificate).
func (l *lab) spkiHashes(t *testing.T) string {
	t.Helper()
	var out []string
	for _, name := range []string{"ca", "c1", "c2", "c3"} {
		data, err := os.ReadFile(filepath.Join(l.dir, "tls", name+".crt"))
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(data)
		if block == nil {
			t.Fatalf("%s.crt: no PEM block", name)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("%s.crt: %v", name, err)
		}
		sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
		out = append(out, base64.StdEncoding.EncodeToString(sum[:]))
	}
	return strings.Join(out, ",")
}

// startChromium starts headless Chromium with a fresh profile and returns
// a browser context; the test's cleanup stops it and checks that no
// Chromium process of that profile is left.
func startChromium(t *testing.T, trustSPKI string) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("%s is missing (scripts/ci-deps.sh installs Debian's chromium): %v", chromiumPath, err)
	}
	profile := t.TempDir() // removed after the browser is stopped (cleanups run last-in first-out)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(profile),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		// The machine's network is closed: without these Chromium keeps
		// trying to reach Google's services and misbehaves.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("ignore-certificate-errors-spki-list", trustSPKI),
		chromedp.WindowSize(1400, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, _ := exec.Command("pgrep", "-f", "--", "user-data-dir="+profile).Output()
			if len(bytes.TrimSpace(out)) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("chromium processes of %s left after the test: %s", profile, bytes.TrimSpace(out))
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	// Start the browser now, so that a broken Chromium fails here. The
	// first call's context is the browser's life, so it has no deadline of
	// its own: the wait is bounded here instead.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(bctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("start %s: %v", chromiumPath, err)
		}
	case <-time.After(60 * time.Second):
		cancelBrowser()
		t.Fatalf("%s did not start within 60s", chromiumPath)
	}
	return bctx
}

// uiSnapshot is what one load of the status page showed.
type uiSnapshot struct {
	primary                   string
	replicaRole, replicaBytes string
	replicaTime, text         string
}

// loadStatusPage loads url in a new tab of browser (with the extra
// headers, when given; otherwise logging in first through /ui/login with
// token), saves a full-page screenshot to shot (and into the directory
// $PGDR_E2E_SCREENSHOTS when set) and reads the main
// cluster's primary and replica's row.
func loadStatusPage(t *testing.T, browser context.Context, url string, headers map[string]any, loginToken, replica, shot string) (uiSnapshot, error) {
	t.Helper()
	bounded, cancel := context.WithTimeout(browser, 60*time.Second)
	defer cancel()
	ctx, closeTab := chromedp.NewContext(bounded)
	defer closeTab()
	var snap uiSnapshot
	if headers != nil {
		if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers(headers)}); err != nil {
			return snap, fmt.Errorf("set the Authorization header: %w", err)
		}
	}
	var steps []chromedp.Action[chromedp.Void]
	if loginToken != "" {
		steps = append(steps,
			chromedp.Navigate(strings.Replace(url, "/ui/", "/ui/login", 1)),
			chromedp.WaitVisible(chromedp.CSS(`#token`)),
			chromedp.SendKeys(chromedp.CSS(`#token`), loginToken),
			chromedp.Submit(chromedp.CSS(`#token`)))
	} else {
		steps = append(steps, chromedp.Navigate(url))
	}
	steps = append(steps, chromedp.WaitVisible(chromedp.CSS(`#coordinators`)))
	if err := chromedp.Do(ctx, steps...); err != nil {
		return snap, fmt.Errorf("load %s: %w", url, err)
	}
	row := fmt.Sprintf(`#cluster-main tr[data-member=%q]`, replica)
	for _, q := range []struct {
		sel string
		out *string
	}{
		{`#cluster-main .primary-name`, &snap.primary}, {row + ` td.role`, &snap.replicaRole},
		{row + ` td.lag-bytes`, &snap.replicaBytes}, {row + ` td.lag-seconds`, &snap.replicaTime}, {`body`, &snap.text},
	} {
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(q.sel)))
		if err != nil {
			return snap, fmt.Errorf("%s on %s: %w", q.sel, url, err)
		}
		*q.out = strings.TrimSpace(v)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100: PNG
	if err != nil {
		return snap, fmt.Errorf("screenshot of %s: %w", url, err)
	}
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		return snap, err
	}
	if keep := os.Getenv("PGDR_E2E_SCREENSHOTS"); keep != "" { // to look at them after the test
		if err := os.WriteFile(filepath.Join(keep, filepath.Base(shot)), png, 0o644); err != nil {
			return snap, err
		}
	}
	t.Logf("status page %s: screenshot %s (%d bytes); primary %q, %s: role %q lag %q / %q", url, shot, len(png), snap.primary, replica,
		snap.replicaRole, snap.replicaBytes, snap.replicaTime)
	return snap, nil
}

var (
	lagBytesRE   = regexp.MustCompile(`^\d+(\.\d)? (B|[KMGTPE]iB)$`)
	lagSecondsRE = regexp.MustCompile(`^[0-9.hms]+$`)
)

// TestStatusPageInChromium renders the coordinators' status page in
// headless Chromium against the lab: the primary's name and a replica's
// lag are shown (read token in an Authorization header); after a
// switchover a second load, on a follower and through the login form,
// shows the new primary.
func TestStatusPageInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the lab and Chromium")
	}
	l := startLab(t)
	tokenBytes, err := os.ReadFile(filepath.Join(l.dir, "read.token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tokenBytes))
	l.waitHealthyReplica(t, "pg-a2", 90*time.Second)
	epoch := l.wantPrimary(t, "pg-a1")
	browser := startChromium(t, l.spkiHashes(t))
	shots := t.TempDir()

	var snap uiSnapshot
	testutil.WaitFor(t, 60*time.Second, "the status page shows pg-a1 as primary and pg-a2's lag", func() (bool, error) {
		snap, err = loadStatusPage(t, browser, l.uiURL(1, "/ui/"), map[string]any{"Authorization": "Bearer " + token}, "", "pg-a2",
			filepath.Join(shots, "statuspage-before.png"))
		if err != nil {
			return false, err
		}
		return snap.primary == "pg-a1" && snap.replicaRole == "replica" && lagBytesRE.MatchString(snap.replicaBytes) && lagSecondsRE.MatchString(snap.replicaTime),
			fmt.Errorf("primary %q, pg-a2 role %q lag %q / %q", snap.primary, snap.replicaRole, snap.replicaBytes, snap.replicaTime)
	})
	for _, want := range []string{"Region us-east-1", "Recovery targets", "Last backup per tier", "Recent history", "lab-read (read)"} {
		if !strings.Contains(snap.text, want) {
			t.Errorf("the page lacks %q:\n%s", want, snap.text)
		}
	}

	if out, err := l.ctl("switchover", "--cluster", "main", "--to", "pg-a2", "--json"); err != nil {
		t.Fatalf("switchover: %v\n%s", err, out)
	}
	l.waitNewPrimary(t, "pg-a1", epoch, 90*time.Second)
	l.wantPrimary(t, "pg-a2")
	// The second load goes to a follower, which asks the leader for the
	// health, and logs in through the form (the cookie, not a header).
	leader, err := l.leaderName()
	if err != nil {
		t.Fatal(err)
	}
	follower := 1
	if leader == "c1" {
		follower = 2
	}
	testutil.WaitFor(t, 60*time.Second, "the status page shows pg-a2 as primary", func() (bool, error) {
		snap, err = loadStatusPage(t, browser, l.uiURL(follower, "/ui/"), nil, token, "pg-a1", filepath.Join(shots, "statuspage-after.png"))
		if err != nil {
			return false, err
		}
		return snap.primary == "pg-a2", fmt.Errorf("primary %q", snap.primary)
	})
	if !strings.Contains(snap.text, "switchover") {
		t.Errorf("the history on the page does not show the switchover:\n%s", snap.text)
	}
}
