package audit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/miekg/dns"
)

var corpus = filepath.Join(testenv.SharedData("dns-fuzzing"), "packet")

// TestParseCorpus reads every message of the shared DNS corpus and, for
// each one miekg/dns also reads, compares what both make of it.
func TestParseCorpus(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(corpus, "*"))
	if len(files) == 0 {
		testenv.Data(t, "dns-fuzzing")
		t.Fatal("no messages in " + corpus)
	}
	var m message
	compared := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		err = parseMessage(b, &m)
		var ref dns.Msg
		if ref.Unpack(b) != nil || len(ref.Question) == 0 {
			continue
		}
		name := strings.ToLower(strings.TrimSuffix(ref.Question[0].Name, "."))
		if strings.ContainsAny(name, "\\") {
			continue // escaped bytes: spelled differently on purpose
		}
		if err != nil {
			t.Errorf("%s: miekg/dns reads it, we do not: %v", filepath.Base(f), err)
			continue
		}
		compared++
		opt := ref.IsEdns0()
		if m.id != ref.Id || m.response != ref.Response || string(m.name) != name || m.qtype != ref.Question[0].Qtype ||
			m.answers != len(ref.Answer) || m.edns != (opt != nil) || opt != nil && m.ednsSize != opt.UDPSize() {
			t.Errorf("%s: id %d resp %v name %q type %d answers %d edns %v/%d; miekg: %d %v %q %d %d %v",
				filepath.Base(f), m.id, m.response, m.name, m.qtype, m.answers, m.edns, m.ednsSize,
				ref.Id, ref.Response, name, ref.Question[0].Qtype, len(ref.Answer), opt != nil)
		}
	}
	if compared < 1000 {
		t.Errorf("only %d messages compared", compared)
	}
	t.Logf("%d messages compared with miekg/dns", compared)
}

func FuzzParseMessage(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(corpus, "*"))
	for i, p := range files {
		if i%50 != 0 {
			continue
		}
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add(query(1, "www.example.com", 1, true))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m message
		if parseMessage(b, &m) != nil {
			return
		}
		if len(m.name) > 255*4 || m.nTypes > len(m.ansTypes) {
			t.Fatalf("name of %d bytes, %d types", len(m.name), m.nTypes)
		}
	})
}
