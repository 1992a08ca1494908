package listen_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/listen"
	"github.com/dnsguard/dnsguard/guard/testenv"
	"github.com/miekg/dns"
)

// header builds a raw message: a header with the given opcode and
// section counts, then body.
func header(id uint16, opcode int, rd bool, qd, an, ns, ar uint16, body ...[]byte) []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint16(b, id)
	b[2] = byte(opcode&0xF) << 3
	if rd {
		b[2] |= 1
	}
	binary.BigEndian.PutUint16(b[4:], qd)
	binary.BigEndian.PutUint16(b[6:], an)
	binary.BigEndian.PutUint16(b[8:], ns)
	binary.BigEndian.PutUint16(b[10:], ar)
	for _, p := range body {
		b = append(b, p...)
	}
	return b
}

var (
	// question x.test. SOA IN
	soaQuestion = []byte{1, 'x', 4, 't', 'e', 's', 't', 0, 0, 6, 0, 1}
	// question 3.many.test. A IN
	aQuestion = []byte{1, '3', 4, 'm', 'a', 'n', 'y', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1}
	// an UPDATE's update section: add x.test. 300 A 192.0.2.1
	updateRR = []byte{1, 'x', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 192, 0, 2, 1}
)

// rawTCP sends one message over TCP and reads the answer.
func rawTCP(t *testing.T, addr string, b []byte) []byte {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write(append([]byte{byte(len(b) >> 8), byte(len(b))}, b...)); err != nil {
		t.Fatal(err)
	}
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return nil
	}
	out := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(c, out); err != nil {
		return nil
	}
	return out
}

// TestOpcodes: RFC 8906 §3.1.4, an opcode the guard does not serve gets
// NOTIMP whether or not its question section parses (the opcode is
// looked at first); RA is set only in answers to QUERY, the one opcode
// for which recursion is offered.
func TestOpcodes(t *testing.T) {
	addr, _, _ := start(t, listen.Options{})
	tests := []struct {
		name   string
		msg    []byte
		rcode  int
		ra     bool
		withQ  bool // the answer echoes the question
		opcode int
	}{
		{"unknown opcode 15, no question", header(0x1501, 15, false, 0, 0, 0, 0), dns.RcodeNotImplemented, false, false, 15},
		{"unknown opcode 15, RD, no question", header(0x1502, 15, true, 0, 0, 0, 0), dns.RcodeNotImplemented, false, false, 15},
		{"unassigned opcode 3 with a question", header(0x0301, 3, true, 1, 0, 0, 0, aQuestion), dns.RcodeNotImplemented, false, true, 3},
		{"unassigned opcode 3, question cut short", header(0x0302, 3, false, 1, 0, 0, 0, aQuestion[:5]), dns.RcodeNotImplemented, false, false, 3},
		{"IQUERY (obsolete), no question, one answer record", header(0x0101, dns.OpcodeIQuery, false, 0, 1, 0, 0, updateRR), dns.RcodeNotImplemented, false, false, dns.OpcodeIQuery},
		{"STATUS, two questions", header(0x0201, dns.OpcodeStatus, false, 2, 0, 0, 0, soaQuestion, aQuestion), dns.RcodeNotImplemented, false, false, dns.OpcodeStatus},
		{"NOTIFY", header(0x0401, dns.OpcodeNotify, false, 1, 0, 0, 0, soaQuestion), dns.RcodeNotImplemented, false, true, dns.OpcodeNotify},
		{"UPDATE with an update section", header(0x0501, dns.OpcodeUpdate, false, 1, 0, 1, 0, soaQuestion, updateRR), dns.RcodeNotImplemented, false, true, dns.OpcodeUpdate},
		{"UPDATE whose update section does not parse", header(0x0502, dns.OpcodeUpdate, false, 1, 0, 1, 0, soaQuestion, updateRR[:9]), dns.RcodeNotImplemented, false, true, dns.OpcodeUpdate},
		{"DSO without a question", header(0x0601, 6, false, 0, 0, 0, 0), dns.RcodeNotImplemented, false, false, 6},
		{"QUERY without a question: FORMERR, recursion offered", header(0x0001, dns.OpcodeQuery, true, 0, 0, 0, 0), dns.RcodeFormatError, true, false, 0},
		{"QUERY with two questions", header(0x0002, dns.OpcodeQuery, true, 2, 0, 0, 0, aQuestion, soaQuestion), dns.RcodeFormatError, true, false, 0},
		{"QUERY answered", header(0x0003, dns.OpcodeQuery, true, 1, 0, 0, 0, aQuestion), dns.RcodeSuccess, true, true, 0},
	}
	for _, tt := range tests {
		for _, netw := range []string{"udp", "tcp"} {
			t.Run(tt.name+"/"+netw, func(t *testing.T) {
				var r []byte
				if netw == "udp" {
					r = rawUDP(t, addr, tt.msg)
				} else {
					r = rawTCP(t, addr, tt.msg)
				}
				if len(r) < 12 {
					t.Fatalf("answer %x", r)
				}
				id := binary.BigEndian.Uint16(r)
				qr, opcode, ra, rcode := r[2]&0x80 != 0, int(r[2]>>3&0xF), r[3]&0x80 != 0, int(r[3]&0xF)
				if id != binary.BigEndian.Uint16(tt.msg) || !qr || opcode != tt.opcode {
					t.Errorf("id %#x qr %v opcode %d, want id %#x, a response, opcode %d", id, qr, opcode, binary.BigEndian.Uint16(tt.msg), tt.opcode)
				}
				if rcode != tt.rcode {
					t.Errorf("rcode %s, want %s", dns.RcodeToString[rcode], dns.RcodeToString[tt.rcode])
				}
				if ra != tt.ra {
					t.Errorf("RA %v, want %v", ra, tt.ra)
				}
				if qd := binary.BigEndian.Uint16(r[4:]); (qd == 1) != tt.withQ {
					t.Errorf("QDCOUNT %d, want the question echoed: %v", qd, tt.withQ)
				}
				if rd := r[2]&1 != 0; rd != (tt.msg[2]&1 != 0) {
					t.Errorf("RD %v not copied", rd)
				}
			})
		}
	}
}

// TestOpcodesRealClients asks with dig and kdig, as an operator or a
// protocol test suite would.
func TestOpcodesRealClients(t *testing.T) {
	paths := testenv.Require(t, "dig", "kdig")
	addr, _, _ := start(t, listen.Options{})
	host, port, _ := net.SplitHostPort(addr)
	dig := []string{paths[0], "@" + host, "-p", port, "+tries=1", "+time=3"}
	kdig := []string{paths[1], "@" + host, "-p", port, "+retry=0", "+timeout=3"}
	tests := []struct {
		name   string
		args   []string
		status string
		ra     bool
	}{
		{"dig opcode 15, no question", append(dig, "+header-only", "+opcode=15"), "NOTIMP", false},
		{"dig opcode 15 over TCP", append(dig, "+tcp", "+header-only", "+opcode=15"), "NOTIMP", false},
		{"dig UPDATE", append(dig, "+opcode=5", "x.test", "SOA"), "NOTIMP", false},
		{"dig STATUS", append(dig, "+opcode=2", "x.test"), "NOTIMP", false},
		{"dig opcode 3", append(dig, "+opcode=3", "+norecurse", "3.many.test"), "NOTIMP", false},
		{"kdig NOTIFY", append(kdig, "-t", "NOTIFY", "x.test"), "NOTIMP", false},
		{"kdig NOTIFY over TCP", append(kdig, "+tcp", "-t", "NOTIFY", "x.test"), "NOTIMP", false},
		{"dig QUERY without a question", append(dig, "+header-only"), "FORMERR", true},
		{"dig QUERY", append(dig, "3.many.test", "A"), "NOERROR", true},
		{"kdig QUERY", append(kdig, "3.many.test", "A"), "NOERROR", true},
	}
	status := regexp.MustCompile(`status: ([A-Z]+)`)
	flags := regexp.MustCompile(`(?m)^;; [Ff]lags: ([a-z ]*);`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, tt.args[0], tt.args[1:]...).CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %v\n%s", tt.args, err, out)
			}
			s, f := status.FindSubmatch(out), flags.FindSubmatch(out)
			if s == nil || f == nil {
				t.Fatalf("no status/flags in\n%s", out)
			}
			got := string(s[1])
			if got == "NOTIMPL" { // kdig's name for it
				got = "NOTIMP"
			}
			if got != tt.status {
				t.Errorf("status %s, want %s\n%s", s[1], tt.status, out)
			}
			if ra := strings.Contains(" "+string(f[1])+" ", " ra "); ra != tt.ra {
				t.Errorf("flags %q: RA %v, want %v", f[1], ra, tt.ra)
			}
		})
	}
}
