package audit

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/dnsguard/dnsguard/guard/capture"
	"github.com/dnsguard/dnsguard/guard/testenv"
)

// Hostile strings a capture can carry into the report: query names (a
// label may hold any octet but a few the presentation form escapes) and
// the capture's file name.
var hostileNames = []string{
	"</script><script>alert(1)</script>.example",
	"<!--<img/src=x/onerror=alert(1)>.example",
	"<svg/onload=alert(2)>.example",
}

const hostileFile = "<img src=x onerror=alert(3)><script>.pcap" // no slash: a file name

// hostileReport audits a capture of queries for hostileNames, in a file
// named hostileFile.
func hostileReport(t *testing.T) *Report {
	s := &synth{t: t, lt: capture.LinkEthernet}
	for i := range 5 {
		for j, n := range hostileNames {
			s.udpQuery(uint16(100*i+j+1), uint16(4000+i), n, true)
		}
	}
	return auditFiles(t, Options{}, s.file(t.TempDir(), hostileFile))
}

var reportData = regexp.MustCompile(`(?s)<script id="report-data" type="application/json">(.*?)</script>`)

// TestHTMLEscapesHostileStrings: names and file names that are markup
// reach the page only as data: the page holds the template's two script
// elements and nothing else that opens or closes one, and the data read
// back gives every string as it was.
func TestHTMLEscapesHostileStrings(t *testing.T) {
	rep := hostileReport(t)
	d := onlyDevice(t, rep)
	if d.Names.Distinct != len(hostileNames) {
		t.Fatalf("%d names, want %d: %+v", d.Names.Distinct, len(hostileNames), d.Names.Top)
	}
	var out bytes.Buffer
	if err := rep.WriteHTML(&out); err != nil {
		t.Fatal(err)
	}
	page := out.String()
	lower := strings.ToLower(page)
	if n, m := strings.Count(lower, "<script"), strings.Count(lower, "</script"); n != 2 || m != 2 {
		t.Errorf("%d <script and %d </script in the page, want the template's 2", n, m)
	}
	for _, bad := range []string{"<!--", "<img", "<svg/", "alert(1)</script>"} {
		if strings.Contains(page, bad) {
			t.Errorf("page holds %q unescaped", bad)
		}
	}
	m := reportData.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no report data in the page")
	}
	var back Report
	if err := json.Unmarshal([]byte(m[1]), &back); err != nil {
		t.Fatalf("report data does not parse: %v", err)
	}
	if len(back.Files) != 1 || filepath.Base(back.Files[0].Path) != hostileFile {
		t.Errorf("file name read back as %+v", back.Files)
	}
	got := map[string]bool{}
	for _, dv := range back.Devices {
		for _, n := range dv.Names.Top {
			got[n.Name] = true
		}
	}
	for _, n := range d.Names.Top {
		if !got[n.Name] || !strings.Contains(n.Name, "<") {
			t.Errorf("name %q not read back intact (%v)", n.Name, got)
		}
	}
}

// renderedDOM writes rep's HTML report and returns the page as headless
// Chromium renders it, after its script ran.
func renderedDOM(t *testing.T, rep *Report) []byte {
	t.Helper()
	chromium := testenv.Require(t, "chromium")[0]
	dir := t.TempDir()
	page := filepath.Join(dir, "report.html")
	var out bytes.Buffer
	if err := rep.WriteHTML(&out); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(page, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--dump-dom", "file://"+page)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	dom, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	return dom
}

// TestHTMLInChromium renders the HTML report of real captures in headless
// Chromium and checks the script drew every plot.
func TestHTMLInChromium(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(sentinel, "HueBridge", "*.pcap"))
	more, _ := filepath.Glob(filepath.Join(sentinel, "Aria", "*.pcap"))
	files = append(files, more...)
	if len(files) == 0 {
		testenv.Data(t, "iot-sentinel")
		t.Fatal("no such captures in ../shared/data/iot-sentinel")
	}
	rep := auditFiles(t, Options{}, files...)
	dom := renderedDOM(t, rep)
	withQueries := 0
	for _, d := range rep.Devices {
		if d.Queries > 0 {
			withQueries++
		}
	}
	want := 4 * withQueries
	if !bytes.Contains(dom, []byte(`data-rendered="`+strconv.Itoa(want)+`"`)) || !bytes.Contains(dom, []byte("rendered "+strconv.Itoa(want)+" plots")) {
		t.Fatalf("plots not rendered (want %d):\n%.2000s", want, dom)
	}
	if n := bytes.Count(dom, []byte("<svg")); n != want {
		t.Errorf("%d <svg> elements, want %d", n, want)
	}
	if n := bytes.Count(dom, []byte("<circle")); n < 1166 {
		t.Errorf("%d points drawn, want the HueBridge's 1166 IDs and ports", n)
	}
	if !bytes.Contains(dom, []byte(`<span class="weak"`)) || !bytes.Contains(dom, []byte("weak (constant)")) {
		t.Error("verdicts missing from the rendered page")
	}
}

// TestHTMLHostileInChromium: Chromium renders the hostile report with
// every plot drawn, the hostile names shown as text, and no element made
// of them.
func TestHTMLHostileInChromium(t *testing.T) {
	dom := renderedDOM(t, hostileReport(t))
	if !bytes.Contains(dom, []byte(`data-rendered="4"`)) {
		t.Fatalf("plots not rendered: the script broke?\n%.3000s", dom)
	}
	for _, bad := range []string{"<img", "<svg/", "<!--<"} {
		if bytes.Contains(dom, []byte(bad)) {
			t.Errorf("rendered page holds an element or comment from a name: %q", bad)
		}
	}
	if n := bytes.Count(bytes.ToLower(dom), []byte("<script")); n != 2 {
		t.Errorf("%d script elements in the rendered page, want 2", n)
	}
	if !bytes.Contains(dom, []byte("&lt;/script&gt;&lt;script&gt;alert")) || !bytes.Contains(dom, []byte("&lt;svg/onload=alert")) {
		t.Errorf("hostile names not shown as text:\n%.3000s", dom)
	}
}
