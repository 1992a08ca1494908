package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/control"
	"github.com/dnsguard/dnsguard/guard/device"
	"github.com/dnsguard/dnsguard/guard/tablei"
	"github.com/dnsguard/dnsguard/guard/testenv"
	"golang.org/x/net/websocket"
)

// apiXSSName is a query name a device sends that is markup: the
// dashboard must show it as text.
const apiXSSName = "<img/src=x/onerror=alert(1)>.example"

// TestAPIHome runs the guard in the home network with the API on the
// router's LAN address and checks, from the device's namespace (the LAN)
// and the WAN's (outside allow_client): the token, the endpoints against
// the traffic the device sent (a hard-coded resolver, a DoT attempt, a
// storm of queries named as markup), /metrics through promtool, an
// override by POST seen by `dnsguard devices` and surviving a restart,
// and the dashboard in headless Chromium at phone width: login, the
// device's row and marks, the markup shown as text, an override click.
func TestAPIHome(t *testing.T) {
	h := newHome(t)
	testenv.Require(t, "chromium", "promtool")
	tok := make([]byte, 16)
	rand.Read(tok)
	token := hex.EncodeToString(tok)
	apiAddr := net.JoinHostPort(h.lan4, "8053")
	base := "http://" + apiAddr
	// The lease names the device with markup; the lease reader keeps
	// only host-name characters, so the device goes by its MAC.
	leases := filepath.Join(h.dir, "dhcp.leases")
	lease := fmt.Sprintf("%d %s %s %s *\n", time.Now().Add(12*time.Hour).Unix(), homeDevMAC, h.dev4, "<img/src=x/onerror=alert(1)>")
	if err := os.WriteFile(leases, []byte(lease), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(h.dir, "dnsguard")
	if err := os.WriteFile(conf, []byte(`config dnsguard 'main'
	list lan 'br-lan'
	option flush_interval '1s'
	option leases_file '`+leases+`'
config limits 'limits'
	option device_rate '1'
	option device_burst '5'
config intercept 'intercept'
	option nflog_group '53'
config api 'api'
	option listen '`+apiAddr+`'
	option token '`+token+`'
config class 'cameras'
	list mac_prefix '02:00:5e'
	option strict '1'
`), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func() *guardProc {
		return runGuard(t, exec.Command("ip", "netns", "exec", h.rtr, binary, "run",
			"--config", conf, "--state", h.state, "--upstream", "udp://10.78.0.2:53"))
	}
	g := start()

	// The device's traffic: its own resolver (intercepted), the guard,
	// a DoT attempt, then a storm named as markup.
	h.dig(t, h.dev, "@8.8.8.8", "hardcoded.example")
	h.dig(t, h.dev, "@"+h.lan4, "one.example")
	testenv.InNetns(h.dev, func() error {
		c, err := net.DialTimeout("tcp", "1.1.1.1:853", 2*time.Second)
		if err == nil {
			c.Close()
		}
		return nil
	})
	storm := []string{"+tries=1", "+timeout=1"}
	for range 15 {
		storm = append(storm, apiXSSName, "@"+h.lan4) // @ after each name: dig's global @ is for the first only
	}
	h.dig(t, h.dev, storm...)

	lan := nsClient(h.dev)
	get := func(c *http.Client, path string, hdr map[string]string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	auth := map[string]string{"Authorization": "Bearer " + token}

	// Outside allow_client (the WAN side): the connection is closed.
	if _, err := nsClient(h.wan).Get(base + "/metrics"); err == nil {
		t.Error("a WAN client got an answer from the API")
	}
	if code, _ := get(lan, "/api/v1/devices", nil); code != 401 {
		t.Errorf("devices without a token: %d", code)
	}
	if code, _ := get(lan, "/api/v1/devices", map[string]string{"Authorization": "Bearer wrong"}); code != 401 {
		t.Errorf("devices with a wrong token: %d", code)
	}

	var views []device.View
	waitFor(t, "the device's bypass attempts and storm in its record", func() bool {
		code, b := get(lan, "/api/v1/devices", auth)
		views = nil
		if code != 200 || json.Unmarshal(b, &views) != nil {
			return false
		}
		v := findDevice(views, homeDevMAC)
		return v != nil && v.RateLimited > 0 && v.TableI.DoS == tablei.Vulnerable && v.TableI.HardCodedResolver == tablei.Vulnerable && bypassKinds(v)["dot"] > 0
	})
	v := findDevice(views, homeDevMAC)
	if v.Name != "" || v.Queries < 5 {
		t.Errorf("device %+v: want no name (the lease's markup is dropped) and its queries counted", v)
	}
	code, b := get(lan, "/api/v1/devices/"+homeDevMAC, auth)
	if code != 200 || !bytes.Contains(b, []byte(`"mac":"`+homeDevMAC+`"`)) {
		t.Errorf("GET device: %d %s", code, b)
	}

	code, b = get(lan, "/api/v1/events", auth)
	var evs []control.Event
	if code != 200 || json.Unmarshal(b, &evs) != nil {
		t.Fatalf("events: %d %s", code, b)
	}
	seen := map[string]bool{}
	for _, e := range evs {
		if e.Device == homeDevMAC {
			seen[e.Kind+":"+e.Bypass] = true
			if e.Kind == "storm" && !strings.Contains(e.Query, "<img/src=x/onerror=alert") {
				t.Errorf("storm event %+v: want the markup query", e)
			}
		}
	}
	for _, k := range []string{"bypass:do53", "bypass:dot", "storm:"} {
		if !seen[k] {
			t.Errorf("no %s event in %s", k, b)
		}
	}

	// /metrics from the LAN without the token, valid for promtool, with
	// the traffic counted.
	code, metrics := get(lan, "/metrics", nil)
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = bytes.NewReader(metrics)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	// The device is the LAN's only one and quiet now: the bypass counters
	// are its record's.
	kinds := bypassKinds(v)
	for _, k := range []string{"dot", "do53"} {
		if got := metricValue(metrics, `dnsguard_bypass_attempts_total{kind="`+k+`"}`); got != float64(kinds[k]) || got == 0 {
			t.Errorf("dnsguard_bypass_attempts_total{kind=%q} %v, device record %d", k, got, kinds[k])
		}
	}
	for _, name := range []string{`dnsguard_queries_total{transport="udp",rcode="REFUSED"}`, `dnsguard_rate_limited_total`, `dnsguard_intercept_active`} {
		if got := metricValue(metrics, name); got < 1 {
			t.Errorf("%s %v", name, got)
		}
	}

	// The dashboard, in Chromium on the device's side, at phone width.
	br := startBrowser(t, h.dev)
	br.call(t, "Emulation.setDeviceMetricsOverride", map[string]any{"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true})
	br.call(t, "Page.navigate", map[string]any{"url": base + "/"})
	waitFor(t, "the login form", func() bool {
		return br.eval(t, `!!document.getElementById('login') && !document.getElementById('login').hidden`) == "true"
	})
	br.eval(t, `document.getElementById('token').value = 'wrong'; document.querySelector('#login button').click(); 1`)
	waitFor(t, "the wrong token refused", func() bool { return br.eval(t, `document.getElementById('loginerr').textContent`) != `""` })
	br.eval(t, `document.getElementById('token').value = `+strconv.Quote(token)+`; document.querySelector('#login button').click(); 1`)
	waitFor(t, "the device's row and the events", func() bool {
		return br.eval(t, `document.querySelectorAll('#devices tbody tr').length > 0 && document.querySelectorAll('#events tbody tr').length > 0`) == "true"
	})
	var page struct {
		Devices, Events, Marks []string
		Imgs                   int
		Cookie                 string
		Alerted                bool
	}
	if err := json.Unmarshal([]byte(br.evalJSON(t, `({
		devices: [...document.querySelectorAll('#devices tbody td.dev')].map(td => td.textContent),
		events: [...document.querySelectorAll('#events tbody td')].map(td => td.textContent),
		marks: [...document.querySelectorAll('#devices tbody tr:first-child td.x, #devices tbody tr:first-child td.ok')].map(td => td.textContent + ' ' + td.title),
		imgs: document.querySelectorAll('img').length,
		cookie: document.cookie,
	})`)), &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Devices) == 0 || !strings.Contains(strings.Join(page.Devices, " "), homeDevMAC) {
		t.Errorf("device rows %q", page.Devices)
	}
	if page.Imgs != 0 || !strings.Contains(strings.Join(page.Events, " "), "<img/src=x/onerror=alert") {
		t.Errorf("markup in a query name: %d img elements; events %q", page.Imgs, page.Events)
	}
	if strings.Contains(page.Cookie, "dnsguard_session") {
		t.Errorf("the session cookie is readable by scripts: %q", page.Cookie)
	}
	if !strings.Contains(strings.Join(page.Marks, "|"), "x rate limited") {
		t.Errorf("Table I marks %q: want DoS x with its evidence", page.Marks)
	}
	shot := br.call(t, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true})
	var img struct{ Data string }
	json.Unmarshal(shot, &img)
	png, err := base64.StdEncoding.DecodeString(img.Data)
	if err != nil || len(png) < 1000 {
		t.Errorf("screenshot: %v (%d octets)", err, len(png))
	}
	dir := os.Getenv("DNSGUARD_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	os.MkdirAll(dir, 0o755)
	shotFile := filepath.Join(dir, "dashboard-phone.png")
	os.WriteFile(shotFile, png, 0o644)
	t.Logf("dashboard screenshot (390 px wide): %s", shotFile)

	// An override by a click: the device is exempted.
	br.eval(t, `document.querySelector('button[data-device="`+homeDevMAC+`"][data-action="exempt"]').click(); 1`)
	waitFor(t, "the exempt override from the dashboard", func() bool {
		code, b := get(lan, "/api/v1/devices/"+homeDevMAC, auth)
		var v device.View
		return code == 200 && json.Unmarshal(b, &v) == nil && v.Exempt && v.Override != nil
	})
	// `dnsguard devices` sees it, and it survives a restart.
	out, err := exec.Command("ip", "netns", "exec", h.rtr, binary, "devices", "--json", "--config", conf, "--state", h.state).Output()
	var cli []device.View
	if err != nil || json.Unmarshal(out, &cli) != nil {
		t.Fatalf("dnsguard devices: %v %s", err, out)
	}
	if v := findDevice(cli, homeDevMAC); v == nil || !v.Exempt {
		t.Errorf("dnsguard devices: %+v", v)
	}
	if err := g.stop(t, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	g2 := start()
	waitFor(t, "the API after the restart", func() bool {
		resp, err := lan.Get(base + "/metrics")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	// A reload keeps the API and its counters (they live with the router
	// side, not the chain a reload replaces).
	h.dig(t, h.dev, "@"+h.lan4, "after-restart.example")
	_, before := get(lan, "/metrics", nil)
	if !g2.reload(t) {
		t.Fatal("SIGHUP: config not reloaded")
	}
	q := `dnsguard_queries_total{transport="udp",rcode="NOERROR"}`
	waitFor(t, "the counters going on across the reload", func() bool {
		h.dig(t, h.dev, "@"+h.lan4, "after-reload.example")
		_, now := get(lan, "/metrics", nil)
		if metricValue(now, q) < metricValue(before, q) {
			t.Fatalf("%s went from %v to %v across a reload", q, metricValue(before, q), metricValue(now, q))
		}
		return metricValue(now, q) > metricValue(before, q)
	})
	code, b = get(lan, "/api/v1/devices/"+homeDevMAC, auth)
	var after device.View
	if code != 200 || json.Unmarshal(b, &after) != nil || !after.Exempt || after.Override == nil || after.Override.Exempt == nil || !*after.Override.Exempt {
		t.Errorf("after a restart: %d %s", code, b)
	}
}

// metricValue is the value of the sample named (with its labels) in a
// Prometheus text exposition; -1 if absent.
func metricValue(text []byte, sample string) float64 {
	for _, line := range strings.Split(string(text), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

func bypassKinds(v *device.View) map[string]uint64 {
	m := map[string]uint64{}
	for _, a := range v.Bypass {
		m[a.Kind] += a.Count
	}
	return m
}

// waitFor polls ok until it holds, failing the test after 30 s.
func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// nsDial dials from network namespace ns (the socket is made there; it
// may be used from any thread afterwards).
func nsDial(ns, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := testenv.InNetns(ns, func() error {
		var err error
		c, err = net.DialTimeout(network, addr, 5*time.Second)
		return err
	})
	return c, err
}

// nsClient is an HTTP client whose connections start in namespace ns.
func nsClient(ns string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(_ context.Context, network, addr string) (net.Conn, error) {
			return nsDial(ns, network, addr)
		},
	}}
}

// browser is headless Chromium driven over the DevTools protocol.
type browser struct {
	ws *websocket.Conn
	id int
}

// startBrowser runs Debian's Chromium in namespace ns and attaches to its
// page.
func startBrowser(t *testing.T, ns string) *browser {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("ip", "netns", "exec", ns, "chromium", "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--disable-dev-shm-usage", "--user-data-dir="+dir, "--remote-debugging-port=0", "--remote-allow-origins=*", "about:blank")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var port string
	waitFor(t, "Chromium's DevTools port", func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "DevToolsActivePort"))
		port, _, _ = strings.Cut(string(b), "\n")
		return err == nil && port != ""
	})
	devtools := "127.0.0.1:" + port
	var targets []struct{ Type, WebSocketDebuggerURL string }
	waitFor(t, "Chromium's page", func() bool {
		resp, err := nsClient(ns).Get("http://" + devtools + "/json/list")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		targets = nil
		return json.NewDecoder(resp.Body).Decode(&targets) == nil && len(targets) > 0
	})
	var wsURL string
	for _, tg := range targets {
		if tg.Type == "page" {
			wsURL = tg.WebSocketDebuggerURL
		}
	}
	cfg, err := websocket.NewConfig(wsURL, "http://127.0.0.1/")
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nsDial(ns, "tcp", devtools)
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.NewClient(cfg, nc)
	if err != nil {
		t.Fatalf("DevTools websocket: %v\n%s", err, stderr.String())
	}
	ws.MaxPayloadBytes = 64 << 20
	t.Cleanup(func() { ws.Close() })
	return &browser{ws: ws}
}

// call sends one DevTools command and returns its result (events that
// come meanwhile are skipped).
func (b *browser) call(t *testing.T, method string, params any) json.RawMessage {
	t.Helper()
	b.id++
	if err := websocket.JSON.Send(b.ws, map[string]any{"id": b.id, "method": method, "params": params}); err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	b.ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		var m struct {
			ID     int
			Result json.RawMessage
			Error  *struct{ Message string }
		}
		if err := websocket.JSON.Receive(b.ws, &m); err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		if m.ID != b.id {
			continue
		}
		if m.Error != nil {
			t.Fatalf("%s: %s", method, m.Error.Message)
		}
		return m.Result
	}
}

// evalJSON evaluates a JavaScript expression in the page and returns its
// value as JSON.
func (b *browser) evalJSON(t *testing.T, expr string) string {
	t.Helper()
	res := b.call(t, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true})
	var r struct {
		Result struct {
			Value json.RawMessage
		}
		ExceptionDetails *struct{ Text string }
	}
	if err := json.Unmarshal(res, &r); err != nil {
		t.Fatal(err)
	}
	if r.ExceptionDetails != nil {
		t.Fatalf("%s: %s", expr, r.ExceptionDetails.Text)
	}
	return string(r.Result.Value)
}

func (b *browser) eval(t *testing.T, expr string) string { return b.evalJSON(t, expr) }
