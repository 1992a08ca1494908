package dnswire

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/miekg/dns"
)

func rr(t testing.TB, s string) dns.RR {
	t.Helper()
	r, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestParseMessage(t *testing.T) {
	answer := query("Www.Example.COM.", dns.TypeA, true, true)
	answer.Response, answer.Compress = true, true
	answer.Answer = []dns.RR{
		rr(t, "www.example.com. 300 IN CNAME web.example.com."),
		rr(t, "web.example.com. 60 IN A 192.0.2.1"),
		rr(t, "web.example.com. 120 IN A 192.0.2.2"),
	}
	answer.Ns = []dns.RR{rr(t, "example.com. 5 IN NS ns.example.com.")}

	nx := query("nx.example.", dns.TypeAAAA, false, false)
	nx.Response, nx.Rcode = true, dns.RcodeNameError
	nx.Ns = []dns.RR{rr(t, "example. 10 IN SOA ns.example. h.example. 1 2 3 4 5")}

	tc := query("big.example.", dns.TypeTXT, false, false)
	tc.Response, tc.Truncated = true, true

	twoOPT := query("a.example.", dns.TypeA, true, false)
	second := *twoOPT.IsEdns0()
	second.SetUDPSize(4096)
	twoOPT.Extra = append(twoOPT.Extra, &second)

	optInAnswer := query("a.example.", dns.TypeA, false, false)
	optInAnswer.Response = true
	optInAnswer.Answer = []dns.RR{&dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: 1400}}}

	twoQ := query("one.example.", dns.TypeA, false, false)
	twoQ.Compress = true
	twoQ.Question = append(twoQ.Question, dns.Question{Name: "two.one.example.", Qtype: dns.TypeAAAA, Qclass: dns.ClassINET})

	many := query("many.example.", dns.TypeANY, false, false)
	many.Response = true
	for _, s := range []string{"A 192.0.2.1", "AAAA 2001:db8::1", "TXT x", "MX 1 m.example.", "NS n.example.", "HINFO a b",
		"SRV 1 1 1 s.example.", "PTR p.example.", "CAA 0 issue \"ca.example\"", "A 192.0.2.2"} {
		many.Answer = append(many.Answer, rr(t, "many.example. 30 IN "+s))
	}

	noq := new(dns.Msg)
	noq.Response = true

	tests := []struct {
		name    string
		msg     []byte
		wantErr error
		check   func(t *testing.T, m *Message)
	}{
		{"answer", pack(t, answer), nil, func(t *testing.T, m *Message) {
			if !m.Response || m.ID != 0xBEEF || m.Type != dns.TypeA || m.Rcode != 0 || m.TC || m.Questions != 1 {
				t.Errorf("header/question %+v", m)
			}
			if NameString(m.Name) != "www.example.com." {
				t.Errorf("name %q", NameString(m.Name))
			}
			if m.Answers != 3 || m.MinTTL != 60 || !slices.Equal(m.AnswerTypes(), []uint16{dns.TypeCNAME, dns.TypeA}) {
				t.Errorf("answers %d min TTL %d types %v, want 3, 60 (the authority's 5 does not count), [CNAME A]", m.Answers, m.MinTTL, m.AnswerTypes())
			}
			if !m.EDNS.Present || !m.EDNS.DO || m.EDNS.UDPSize != 1400 {
				t.Errorf("EDNS %+v", m.EDNS)
			}
		}},
		{"nxdomain", pack(t, nx), nil, func(t *testing.T, m *Message) {
			if m.Rcode != dns.RcodeNameError || m.Answers != 0 || len(m.AnswerTypes()) != 0 || m.EDNS.Present {
				t.Errorf("got %+v", m)
			}
		}},
		{"truncated", pack(t, tc), nil, func(t *testing.T, m *Message) {
			if !m.TC || !m.Response {
				t.Errorf("got %+v", m)
			}
		}},
		{"query", pack(t, query("q.example.", dns.TypeHTTPS, true, false)), nil, func(t *testing.T, m *Message) {
			q, err := ParseQuery(pack(t, query("q.example.", dns.TypeHTTPS, true, false)))
			if err != nil || m.Response || m.ID != q.ID || m.Type != q.Type || m.NameEnd != q.NameEnd || m.EDNS != q.EDNS || !m.RD {
				t.Errorf("message %+v, query %+v (%v)", m, q, err)
			}
		}},
		{"two OPT: the last counts", pack(t, twoOPT), nil, func(t *testing.T, m *Message) {
			if m.EDNS.UDPSize != 4096 {
				t.Errorf("EDNS %+v", m.EDNS)
			}
		}},
		{"OPT in the answer section is no EDNS", pack(t, optInAnswer), nil, func(t *testing.T, m *Message) {
			if m.EDNS.Present || m.Answers != 1 {
				t.Errorf("got %+v", m)
			}
		}},
		{"two questions: the first", pack(t, twoQ), nil, func(t *testing.T, m *Message) {
			if m.Questions != 2 || NameString(m.Name) != "one.example." || m.Type != dns.TypeA {
				t.Errorf("got %+v", m)
			}
		}},
		{"distinct types, the first eight", pack(t, many), nil, func(t *testing.T, m *Message) {
			want := []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeTXT, dns.TypeMX, dns.TypeNS, dns.TypeHINFO, dns.TypeSRV, dns.TypePTR}
			if m.Answers != 10 || !slices.Equal(m.AnswerTypes(), want) {
				t.Errorf("answers %d types %v", m.Answers, m.AnswerTypes())
			}
		}},
		{"no question", pack(t, noq), ErrQuestions, nil},
		{"short", []byte{1, 2, 3}, ErrShort, nil},
		{"compressed first question", []byte{0, 1, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1}, ErrName, nil},
		{"question cut short", []byte{0, 1, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 'a', 0, 0, 1}, ErrName, nil},
		{"record cut short", pack(t, answer)[:len(pack(t, answer))-30], ErrTrailing, nil},
		{"forward pointer in a record", []byte{0, 1, 0x80, 0, 0, 1, 0, 1, 0, 0, 0, 0,
			1, 'a', 0, 0, 1, 0, 1,
			0xC0, 30, 0, 1, 0, 1, 0, 0, 0, 1, 0, 0}, ErrTrailing, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Message
			err := ParseMessage(tt.msg, &m)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.check != nil {
				tt.check(t, &m)
			}
		})
	}
}

// TestParseMessageCorpus reads every message of the shared DNS corpus and,
// for each one miekg/dns also reads, compares what both make of it.
func TestParseMessageCorpus(t *testing.T) {
	dir := filepath.Join(testenv.SharedData("dns-fuzzing"), "packet")
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(files) == 0 {
		testenv.Data(t, "dns-fuzzing")
		t.Fatal("no messages in " + dir)
	}
	var m Message
	compared := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		err = ParseMessage(b, &m)
		var ref dns.Msg
		if ref.Unpack(b) != nil || len(ref.Question) == 0 {
			continue
		}
		if short(b, &ref) {
			continue // miekg/dns stops where the data ends; so the counts lie
		}
		if err != nil {
			t.Errorf("%s: miekg/dns reads it, we do not: %v", filepath.Base(f), err)
			continue
		}
		compared++
		opt := ref.IsEdns0()
		name := strings.ToLower(ref.Question[0].Name)
		minTTL := ^uint32(0)
		for _, r := range ref.Answer {
			minTTL = min(minTTL, r.Header().Ttl)
		}
		if m.ID != ref.Id || m.Response != ref.Response || m.Rcode != uint8(ref.Rcode&0xF) || m.TC != ref.Truncated ||
			NameString(m.Name) != name || m.Type != ref.Question[0].Qtype || m.Class != ref.Question[0].Qclass ||
			m.Answers != len(ref.Answer) || len(ref.Answer) > 0 && m.MinTTL != minTTL ||
			m.EDNS.Present != (opt != nil) || opt != nil && (m.EDNS.UDPSize != opt.UDPSize() || m.EDNS.DO != opt.Do()) {
			t.Errorf("%s: %+v; miekg: %v", filepath.Base(f), m, &ref)
		}
	}
	if compared < 1000 {
		t.Errorf("only %d messages compared", compared)
	}
	t.Logf("%d messages compared with miekg/dns", compared)
}

// short reports whether miekg/dns read fewer records than the header of
// b counts: it stops without an error where the data ends.
func short(b []byte, ref *dns.Msg) bool {
	counted := int(binary.BigEndian.Uint16(b[6:])) + int(binary.BigEndian.Uint16(b[8:])) + int(binary.BigEndian.Uint16(b[10:]))
	return len(ref.Answer)+len(ref.Ns)+len(ref.Extra) < counted
}

// FuzzParseMessage: never panics; reads every query ParseQuery accepts
// the same way; agrees with miekg/dns on what both read.
func FuzzParseMessage(f *testing.F) {
	corpus(f)
	f.Add(pack(f, query("a.example.", dns.TypeA, true, true)))
	resp := query("a.example.", dns.TypeA, false, false)
	resp.Response = true
	resp.Answer = []dns.RR{rr(f, "a.example. 60 IN A 192.0.2.1")}
	f.Add(pack(f, resp))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Message
		err := ParseMessage(b, &m)
		if q, qerr := ParseQuery(b); qerr == nil {
			if err != nil {
				t.Fatalf("ParseQuery reads it, ParseMessage does not: %v", err)
			}
			if m.ID != q.ID || m.Opcode != q.Opcode || string(m.Name) != string(q.Name) || m.Type != q.Type ||
				m.Class != q.Class || m.NameEnd != q.NameEnd || m.EDNS != q.EDNS || m.RD != q.RD {
				t.Fatalf("message %+v, query %+v", m, q)
			}
		}
		if err != nil {
			return
		}
		if len(m.Name) > MaxName || len(m.AnswerTypes()) > maxTypes || m.Answers < len(m.AnswerTypes()) || m.Questions < 1 {
			t.Fatalf("name of %d octets, %d types of %d answers, %d questions", len(m.Name), len(m.AnswerTypes()), m.Answers, m.Questions)
		}
		var ref dns.Msg
		if ref.Unpack(b) != nil || len(ref.Question) == 0 {
			return
		}
		if ref.Id != m.ID || ref.Response != m.Response || ref.Question[0].Qtype != m.Type || len(ref.Answer) != m.Answers ||
			!strings.EqualFold(ref.Question[0].Name, NameString(m.Name)) {
			t.Fatalf("disagree with miekg: %+v vs %v", m, &ref)
		}
	})
}
