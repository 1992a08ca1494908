package lab

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Experiment is one of the study's Table III manipulations.
type Experiment struct {
	Kind Kind
	N    int // copies (amplify, flood)
}

// Kind names an experiment family.
type Kind string

// The experiments of Table III.
const (
	Baseline    Kind = "baseline"     // honest answers
	TTLZero     Kind = "ttl-zero"     // every TTL 0
	TTLOne      Kind = "ttl-one"      // every TTL 1
	TTLHuge     Kind = "ttl-huge"     // every TTL 10^9
	ForgedA     Kind = "forged-a"     // A records point at the forged IPv4 address
	ForgedAAAA  Kind = "forged-aaaa"  // AAAA 2001:db8::1, also in answer to A
	ForgedCNAME Kind = "forged-cname" // CNAME to alias.example.com.
	Empty       Kind = "empty"        // NOERROR, every record removed
	Inflate     Kind = "inflate"      // answer grown with EDNS padding
	Unavailable Kind = "unavailable"  // no answer at all
	Amplify     Kind = "amplify"      // each record repeated N times
	Flood       Kind = "flood"        // N copies of each response
)

// Experiments lists every experiment the lab plays, in Table III order.
func Experiments() []Experiment {
	return []Experiment{
		{Kind: Baseline}, {Kind: TTLZero}, {Kind: TTLOne}, {Kind: TTLHuge},
		{Kind: ForgedA}, {Kind: ForgedAAAA}, {Kind: ForgedCNAME}, {Kind: Empty},
		{Kind: Inflate}, {Kind: Unavailable},
		{Kind: Amplify, N: 10}, {Kind: Amplify, N: 50}, {Kind: Amplify, N: 100},
		{Kind: Flood, N: 10}, {Kind: Flood, N: 50}, {Kind: Flood, N: 100},
	}
}

// String is the experiment's command-line name ("amplify-10").
func (e Experiment) String() string {
	if e.Kind == Amplify || e.Kind == Flood {
		return fmt.Sprintf("%s-%d", e.Kind, e.N)
	}
	return string(e.Kind)
}

// ParseExperiment reads an experiment name.
func ParseExperiment(s string) (Experiment, error) {
	for _, e := range Experiments() {
		if e.String() == s {
			return e, nil
		}
	}
	for _, k := range []Kind{Amplify, Flood} {
		if rest, ok := strings.CutPrefix(s, string(k)+"-"); ok {
			if n, err := strconv.Atoi(rest); err == nil && n >= 1 && n <= 1000 {
				return Experiment{Kind: k, N: n}, nil
			}
		}
	}
	names := make([]string, 0, 16)
	for _, e := range Experiments() {
		names = append(names, e.String())
	}
	return Experiment{}, fmt.Errorf("lab: unknown experiment %q (have %s; amplify-N and flood-N take any N up to 1000)", s, strings.Join(names, ", "))
}

// Forgery holds what the forged experiments hand out.
type Forgery struct {
	A     netip.Addr // forged-a, forged-cname (study: 192.0.2.1)
	AAAA  netip.Addr // forged-aaaa (study: 2001:db8::1)
	Alias string     // forged-cname target (study: alias.example.com.)
	// InflateTo is the size forged-inflate pads answers to.
	InflateTo int
}

// DefaultForgery is the study's forged data.
func DefaultForgery() Forgery {
	return Forgery{
		A:         netip.MustParseAddr("192.0.2.1"),
		AAAA:      netip.MustParseAddr("2001:db8::1"),
		Alias:     "alias.example.com.",
		InflateTo: 4096,
	}
}

// Apply manipulates the honest answer m to query q as e says and returns
// the messages to send back: none (unavailable), one, or N copies (flood).
func (e Experiment) Apply(q, m *dns.Msg, f Forgery) []*dns.Msg {
	if len(q.Question) != 1 || m.Rcode == dns.RcodeRefused || m.Rcode == dns.RcodeFormatError {
		if e.Kind == Unavailable {
			return nil
		}
		return []*dns.Msg{m}
	}
	qs := q.Question[0]
	setTTL := func(ttl uint32) {
		for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
			for _, rr := range sec {
				if rr.Header().Rrtype != dns.TypeOPT {
					rr.Header().Ttl = ttl
				}
			}
		}
	}
	ttl := uint32(300)
	if len(m.Answer) > 0 {
		ttl = m.Answer[0].Header().Ttl
	}
	switch e.Kind {
	case Baseline:
	case TTLZero:
		setTTL(0)
	case TTLOne:
		setTTL(1)
	case TTLHuge:
		setTTL(1_000_000_000)
	case ForgedA:
		for _, rr := range m.Answer {
			if a, ok := rr.(*dns.A); ok {
				a.A = f.A.AsSlice()
			}
		}
	case ForgedAAAA:
		if qs.Qtype == dns.TypeA || qs.Qtype == dns.TypeAAAA {
			m.Rcode, m.Ns = dns.RcodeSuccess, nil
			m.Answer = []dns.RR{&dns.AAAA{Hdr: dns.RR_Header{Name: qs.Name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: ttl}, AAAA: f.AAAA.AsSlice()}}
		}
	case ForgedCNAME:
		if qs.Qtype == dns.TypeA || qs.Qtype == dns.TypeAAAA {
			m.Rcode, m.Ns = dns.RcodeSuccess, nil
			m.Answer = []dns.RR{&dns.CNAME{Hdr: dns.RR_Header{Name: qs.Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: ttl}, Target: f.Alias}}
			if qs.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: f.Alias, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: f.A.AsSlice()})
			} else {
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: dns.RR_Header{Name: f.Alias, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: ttl}, AAAA: f.AAAA.AsSlice()})
			}
		}
	case Empty:
		m.Rcode, m.Answer, m.Ns, m.Extra = dns.RcodeSuccess, nil, nil, nil
	case Inflate:
		pad(m, f.InflateTo)
	case Unavailable:
		return nil
	case Amplify:
		var out []dns.RR
		for _, rr := range m.Answer {
			for i := 0; i < e.N; i++ {
				out = append(out, dns.Copy(rr))
			}
		}
		m.Answer = out
	case Flood:
		out := make([]*dns.Msg, e.N)
		for i := range out {
			out[i] = m
		}
		return out
	}
	return []*dns.Msg{m}
}

// pad grows m to size octets with an EDNS(0) Padding option (RFC 7830),
// whether or not the query had EDNS: the study's "response padding".
func pad(m *dns.Msg, size int) {
	opt := m.IsEdns0()
	if opt == nil {
		m.SetEdns0(dns.DefaultMsgSize, false)
		opt = m.IsEdns0()
	}
	if n := size - m.Len() - 4; n > 0 {
		opt.Option = append(opt.Option, &dns.EDNS0_PADDING{Padding: make([]byte, n)})
	}
}

// Phase is one step of a schedule. A zero Duration lasts for ever.
type Phase struct {
	Experiment Experiment
	Duration   time.Duration
}

// Schedule is a sequence of phases; after the last one ends it keeps
// playing the last.
type Schedule []Phase

// ParseSchedule reads "baseline:60s,unavailable:30s,baseline".
func ParseSchedule(s string) (Schedule, error) {
	var out Schedule
	for _, part := range strings.Split(s, ",") {
		name, dur, hasDur := strings.Cut(strings.TrimSpace(part), ":")
		e, err := ParseExperiment(name)
		if err != nil {
			return nil, err
		}
		p := Phase{Experiment: e}
		if hasDur {
			if p.Duration, err = time.ParseDuration(dur); err != nil || p.Duration <= 0 {
				return nil, fmt.Errorf("lab: schedule %q: %q is not a positive duration", part, dur)
			}
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("lab: empty schedule")
	}
	return out, nil
}

// At returns the phase playing at elapsed time since the start, and its
// index.
func (s Schedule) At(elapsed time.Duration) (Phase, int) {
	for i, p := range s {
		if p.Duration == 0 || elapsed < p.Duration || i == len(s)-1 {
			return p, i
		}
		elapsed -= p.Duration
	}
	return s[len(s)-1], len(s) - 1
}

// String writes the schedule the way ParseSchedule reads it.
func (s Schedule) String() string {
	parts := make([]string, len(s))
	for i, p := range s {
		parts[i] = p.Experiment.String()
		if p.Duration > 0 {
			parts[i] += ":" + p.Duration.String()
		}
	}
	return strings.Join(parts, ",")
}
