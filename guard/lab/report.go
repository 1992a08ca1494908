package lab

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dnsguard/dnsguard/guard/entropy"
)

// Thresholds behind the marks. They are this lab's reading of the study,
// stated so a mark can be argued with.
const (
	// A client whose query rate under a manipulated answer is this many
	// times its baseline rate reacts to the manipulation (the study saw
	// forged AAAA make "query and retry rates jump").
	rrJump = 3.0
	// Rate multiple under TTL 0/1 (the study: "TTL 0 multiplies query
	// rates") that marks a client vulnerable.
	ttlJump = 10.0
	// Under an unavailable resolver or a flood, a client is vulnerable if
	// its rate grows this much (the study and ANRW'25 saw about tenfold),
	// or if it does not back off at all (Recommendation 6): at least
	// noBackoffRetries retries of failing names, some of them less than
	// noBackoffInterval apart.
	stormJump         = 3.0
	noBackoffRetries  = 5
	noBackoffInterval = 1.0 // seconds
	// A repeat is early when it comes more than this before the TTL the
	// lab gave expired: TTLs count whole seconds, and a client times its
	// TTL from when it sent the query, a round trip before the lab's
	// clock started.
	ttlSlack = time.Second
	// Share of baseline repeats asked before the TTL expired above which
	// TTLs are not honoured (query consistency).
	earlyShare = 0.10
)

// Mark is one Table I cell: vulnerable (x), resilient (ok) or not seen
// (?), with the figures it rests on.
type Mark struct {
	Known      bool
	Vulnerable bool
	Figures    string
}

func (m Mark) String() string {
	switch {
	case !m.Known:
		return "?"
	case m.Vulnerable:
		return "x"
	}
	return "ok"
}

// Grade is one client's row of the study's Table I, for the columns a
// resolver can see.
type Grade struct {
	Addr             string
	Queries          int
	SecureDNS        Mark
	RandomPort       Mark
	RandomID         Mark
	QueryConsistency Mark
	ModifiedRR       Mark
	ForgedTTL        Mark
	DoS              Mark
}

// Grades grades every client of a record.
func Grades(s *Snapshot) []Grade {
	var out []Grade
	for _, c := range s.Clients {
		g := Grade{Addr: c.Addr}
		for _, e := range c.Experiments {
			g.Queries += e.Queries
		}
		g.SecureDNS = secureDNS(c)
		g.RandomPort = randomness(c.Ports, "source port")
		g.RandomID = randomness(c.IDs, "ID")
		g.QueryConsistency = consistency(c)
		base := rate(s, c, string(Baseline))
		g.ModifiedRR = reaction(s, c, base, rrJump, true, ForgedA, ForgedAAAA, ForgedCNAME, Empty, Inflate, Amplify)
		g.ForgedTTL = forgedTTL(s, c, base)
		g.DoS = reaction(s, c, base, stormJump, false, Unavailable, Flood)
		if e := c.Experiments[string(Unavailable)]; e != nil && e.AfterFailures >= noBackoffRetries && e.MinInterval < noBackoffInterval {
			g.DoS.Known, g.DoS.Vulnerable = true, true
			g.DoS.Figures += fmt.Sprintf("; no backoff: %d retries of failing names, some %.2fs apart", e.AfterFailures, e.MinInterval)
		}
		out = append(out, g)
	}
	return out
}

func secureDNS(c *ClientRecord) Mark {
	enc := c.Transports["dot"] + c.Transports["doh"]
	return Mark{Known: true, Vulnerable: enc == 0,
		Figures: fmt.Sprintf("udp %d, tcp %d, dot %d, doh %d; EDNS in %d (max %d)", c.Transports["udp"], c.Transports["tcp"], c.Transports["dot"], c.Transports["doh"], c.EDNS, c.MaxUDPSize)}
}

// randomness grades a client's IDs or source ports with the guard's own
// estimator (guard/entropy: constant, counter, narrow range, small set),
// which also gives the study's sigma and bits.
func randomness(v []uint16, what string) Mark {
	e := entropy.New()
	for _, x := range v {
		e.Observe(x, 0)
	}
	r := e.Result()
	m := Mark{Known: r.Verdict != entropy.Insufficient, Vulnerable: r.Verdict == entropy.Weak}
	switch r.Verdict {
	case entropy.Insufficient:
		m.Figures = fmt.Sprintf("%s: %s", what, r.Reason)
	case entropy.Weak:
		m.Figures = fmt.Sprintf("%s %s: %s", what, r.Reason, r.Detail)
	default:
		m.Figures = fmt.Sprintf("%s: %s", what, r.Detail)
	}
	return m
}

func consistency(c *ClientRecord) Mark {
	e := c.Experiments[string(Baseline)]
	if e == nil || e.Repeats < 3 {
		return Mark{Figures: "too few baseline repeats"}
	}
	share := float64(e.EarlyRepeats) / float64(e.Repeats)
	return Mark{Known: true, Vulnerable: share > earlyShare,
		Figures: fmt.Sprintf("baseline: %d of %d repeats before the TTL expired (%.0f%%), mean interval %.2fs", e.EarlyRepeats, e.Repeats, 100*share, meanInterval(e))}
}

func meanInterval(e *ExpRecord) float64 {
	if e.Intervals == 0 {
		return 0
	}
	return e.IntervalSum / float64(e.Intervals)
}

// rate is queries per second during an experiment (0 if it did not play).
func rate(s *Snapshot, c *ClientRecord, exp string) float64 {
	e := c.Experiments[exp]
	d := s.Duration(exp).Seconds()
	if e == nil || d <= 0 {
		return 0
	}
	return float64(e.Queries) / d
}

// reaction marks a client vulnerable when its query rate under any of the
// experiments of the given kinds reaches jump times its baseline rate
// (or, with useCounts, when it used a forged address).
func reaction(s *Snapshot, c *ClientRecord, base, jump float64, useCounts bool, kinds ...Kind) Mark {
	var figs []string
	m := Mark{}
	names := make([]string, 0, len(c.Experiments))
	for name := range c.Experiments {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if !ofKind(name, kinds) {
			continue
		}
		e := c.Experiments[name]
		r := rate(s, c, name)
		if useCounts && e.Used > 0 {
			m.Known, m.Vulnerable = true, true
			figs = append(figs, fmt.Sprintf("%s: used the forged address %d times", name, e.Used))
		}
		if base <= 0 {
			figs = append(figs, fmt.Sprintf("%s %.2f q/s (no baseline)", name, r))
			continue
		}
		m.Known = true
		ratio := r / base
		if ratio >= jump {
			m.Vulnerable = true
		}
		f := fmt.Sprintf("%s x%.1f", name, ratio)
		if e.AfterFailures > 0 {
			f += fmt.Sprintf(" (%d retries after failures, min interval %.2fs)", e.AfterFailures, e.MinInterval)
		}
		figs = append(figs, f)
	}
	if len(figs) == 0 {
		m.Figures = "not played"
	} else {
		m.Figures = fmt.Sprintf("rate vs baseline %.2f q/s: %s", base, strings.Join(figs, ", "))
	}
	return m
}

func ofKind(name string, kinds []Kind) bool {
	e, err := ParseExperiment(name)
	if err != nil {
		return false
	}
	for _, k := range kinds {
		if e.Kind == k {
			return true
		}
	}
	return false
}

func forgedTTL(s *Snapshot, c *ClientRecord, base float64) Mark {
	m := reaction(s, c, base, ttlJump, false, TTLZero, TTLOne)
	// TTL 10^9: a client that came back for its names in the baseline but
	// never again once told 10^9 will not see a change for 31 years.
	if e, b := c.Experiments[string(TTLHuge)], c.Experiments[string(Baseline)]; e != nil && b != nil && b.Repeats > 0 {
		m.Known = true
		long := s.Duration(string(TTLHuge)).Seconds() > 2*meanInterval(b)
		if e.Repeats == 0 && long {
			m.Vulnerable = true
			m.Figures += fmt.Sprintf(", ttl-huge: stopped asking (%d names, no repeats in %.0fs)", e.Names, s.Duration(string(TTLHuge)).Seconds())
		} else {
			m.Figures += fmt.Sprintf(", ttl-huge: %d repeats of %d names", e.Repeats, e.Names)
		}
	}
	return m
}

// WriteReport prints the Table I columns per client, then the figures
// behind each mark.
func WriteReport(w io.Writer, s *Snapshot) error {
	grades := Grades(s)
	fmt.Fprintf(w, "lab record: schedule %s, %s to %s, %d clients\n", s.Schedule, s.Started.UTC().Format("2006-01-02 15:04:05"), s.Written.UTC().Format("15:04:05"), len(grades))
	for _, p := range s.Phases {
		fmt.Fprintf(w, "  %-14s %6.0fs\n", p.Experiment, p.End.Sub(p.Start).Seconds())
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "client\tqueries\tsecure DNS\trandom port\trandom ID\tquery consistency\tmodified RR\tforged TTL\tDoS")
	for _, g := range grades {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", g.Addr, g.Queries, g.SecureDNS, g.RandomPort, g.RandomID, g.QueryConsistency, g.ModifiedRR, g.ForgedTTL, g.DoS)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, g := range grades {
		fmt.Fprintf(w, "\n%s\n", g.Addr)
		for _, col := range []struct {
			name string
			m    Mark
		}{{"secure DNS", g.SecureDNS}, {"random port", g.RandomPort}, {"random ID", g.RandomID}, {"query consistency", g.QueryConsistency},
			{"modified RR", g.ModifiedRR}, {"forged TTL", g.ForgedTTL}, {"DoS", g.DoS}} {
			fmt.Fprintf(w, "  %-18s %-3s %s\n", col.name, col.m, col.m.Figures)
		}
	}
	_, err := fmt.Fprintln(w, "\nx vulnerable, ok resilient, ? not enough seen (study's Table I columns a resolver can observe)")
	return err
}
