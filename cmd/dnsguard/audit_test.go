//go:build !router

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dnsguard/dnsguard/guard/capture"
)

// auditCapture writes a pcap of n queries from one device with a fixed
// source port and counting IDs.
func auditCapture(t *testing.T, dir string, n int) string {
	t.Helper()
	path := filepath.Join(dir, "dev.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := capture.NewWriter(f, capture.LinkEthernet)
	if err != nil {
		t.Fatal(err)
	}
	dev := capture.Endpoint{MAC: [6]byte{2, 0, 0, 0, 0, 7}, Addr: netip.MustParseAddr("10.0.0.7"), Port: 4096}
	gw := capture.Endpoint{MAC: [6]byte{2, 0, 0, 0, 0, 1}, Addr: netip.MustParseAddr("10.0.0.1"), Port: 53}
	for i := range n {
		id := uint16(100 + i)
		q := []byte{byte(id >> 8), byte(id), 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'f', 'o', 'o', 0, 0, 1, 0, 1}
		if err := w.WritePacket(1.6e18+int64(i)*1e9, capture.BuildUDP(capture.LinkEthernet, dev, gw, q)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestAuditCommand(t *testing.T) {
	dir := t.TempDir()
	auditCapture(t, dir, 30)
	junk := filepath.Join(t.TempDir(), "junk.pcap")
	os.WriteFile(junk, []byte("not a capture at all, just some text"), 0o644)
	html := filepath.Join(t.TempDir(), "r.html")

	tests := []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr []string
	}{
		{"json", []string{"audit", "--json", dir}, 0, []string{`"mac": "02:00:00:00:00:07"`, `"queries": 30`, `"verdict": "weak"`}, nil},
		{"table", []string{"audit", "--html", html, dir}, 0, []string{"02:00:00:00:00:07", "weak (constant)", "weak (counter)", "periodic: foo A every 1.0s"}, nil},
		{"device filter keeps a silent device", []string{"audit", "--device", "02:00:00:00:00:99", dir}, 0, []string{"02:00:00:00:00:99: no DNS queries seen"}, nil},
		{"bad capture", []string{"audit", junk}, 1, nil, []string{junk + ": offset 0", "not a pcap or pcapng capture"}},
		{"no arguments", []string{"audit"}, 2, nil, []string{"usage: dnsguard audit"}},
		{"bad device", []string{"audit", "--device", "zz", dir}, 1, nil, []string{`"zz" is neither a MAC`}},
		{"missing file", []string{"audit", filepath.Join(dir, "nope.pcap")}, 1, nil, []string{"nope.pcap"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := runMain(context.Background(), tt.args, &stdout, &stderr)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout.String(), stderr.String())
			}
			for _, s := range tt.stdout {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout.String())
				}
			}
			for _, s := range tt.stderr {
				if !strings.Contains(stderr.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr.String())
				}
			}
		})
	}
	page, err := os.ReadFile(html)
	if err != nil || !bytes.Contains(page, []byte(`id="report-data"`)) {
		t.Errorf("HTML report not written: %v", err)
	}
	var v any
	var stdout bytes.Buffer
	runMain(context.Background(), []string{"audit", "--json", dir}, &stdout, &bytes.Buffer{})
	if err := json.Unmarshal(stdout.Bytes(), &v); err != nil {
		t.Errorf("--json output is not JSON: %v", err)
	}
}
