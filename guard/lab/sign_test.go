package lab

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnssec"
	"github.com/miekg/dns"
)

// labExchanger asks the lab in-process.
type labExchanger struct{ l *Lab }

func (e labExchanger) Exchange(_ context.Context, q *dns.Msg) (*dns.Msg, error) {
	raw, err := q.Pack()
	if err != nil {
		return nil, err
	}
	out := e.l.Respond(raw, netip.MustParseAddrPort("127.0.0.1:5353"), "udp")
	m := new(dns.Msg)
	if len(out) == 0 {
		return nil, context.DeadlineExceeded
	}
	return m, m.Unpack(out[0])
}

// TestSignedLab: with --dnssec the lab's honest answers validate
// (positive, CNAME, NODATA, NXDOMAIN) and the forged experiments' answers
// are bogus.
func TestSignedLab(t *testing.T) {
	now := time.Now()
	z := DefaultZone()
	signer, err := NewSigner(z.Suffix, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		exp   Kind
		name  string
		qtype uint16
		want  dnssec.Security
	}{
		{Baseline, "www.lab.example.", dns.TypeA, dnssec.Secure},
		{Baseline, "www.lab.example.", dns.TypeAAAA, dnssec.Secure},
		{Baseline, "cname1.lab.example.", dns.TypeA, dnssec.Secure},
		{Baseline, "www.lab.example.", dns.TypeMX, dnssec.Secure},
		{Baseline, "cname1.lab.example.", dns.TypeMX, dnssec.Secure},
		{Baseline, "lab.example.", dns.TypeA, dnssec.Secure},
		{Baseline, "nx1.lab.example.", dns.TypeA, dnssec.Secure},
		{Baseline, "nxa.lab.example.", dns.TypeA, dnssec.Secure},
		{TTLZero, "www.lab.example.", dns.TypeA, dnssec.Secure},
		{ForgedA, "www.lab.example.", dns.TypeA, dnssec.Bogus},
		{ForgedAAAA, "www.lab.example.", dns.TypeA, dnssec.Bogus},
		{ForgedCNAME, "www.lab.example.", dns.TypeA, dnssec.Bogus},
		{Empty, "www.lab.example.", dns.TypeA, dnssec.Bogus},
	} {
		t.Run(string(tc.exp)+" "+tc.name+" "+dns.TypeToString[tc.qtype], func(t *testing.T) {
			l := New(Config{Zone: z, Signer: signer, Schedule: Schedule{{Experiment: Experiment{Kind: tc.exp}}}})
			// Keys come from an honest lab (the anchor's chain), the
			// answer from the experiment.
			honest := New(Config{Zone: z, Signer: signer})
			v, err := dnssec.New(labExchanger{honest}, dnssec.Config{Anchors: []dns.RR{signer.DS()}})
			if err != nil {
				t.Fatal(err)
			}
			q := new(dns.Msg)
			q.SetQuestion(tc.name, tc.qtype)
			q.SetEdns0(1232, true)
			resp, err := labExchanger{l}.Exchange(context.Background(), q)
			if err != nil {
				t.Fatal(err)
			}
			if got := v.Validate(context.Background(), resp); got.Security != tc.want {
				t.Errorf("got %v, want %v\n%v", got, tc.want, resp)
			}
		})
	}
	// Without DO the lab answers as before: no DNSSEC records.
	l := New(Config{Zone: z, Signer: signer})
	q := new(dns.Msg)
	q.SetQuestion("www.lab.example.", dns.TypeA)
	resp, _ := labExchanger{l}.Exchange(context.Background(), q)
	if len(resp.Answer) != 1 {
		t.Errorf("no DO: %v", resp)
	}
}
