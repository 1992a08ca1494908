package lab

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/dnsguard/dnsguard/guard/entropy"
	"github.com/dnsguard/dnsguard/guard/tablei"
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
	// Query consistency (early repeats, their share) is graded as the
	// audit and the live guard grade it: guard/tablei.
)

// Cell is one Table I cell with the figures its mark rests on.
type Cell struct {
	Mark    tablei.Mark
	Figures string
}

func (c Cell) String() string { return string(c.Mark) }

// cell is the cell for what a grader found: Unknown when it saw nothing
// to go on, else Vulnerable or Resilient.
func cell(known, vulnerable bool, figures string) Cell {
	switch {
	case !known:
		return Cell{tablei.Unknown, figures}
	case vulnerable:
		return Cell{tablei.Vulnerable, figures}
	}
	return Cell{tablei.Resilient, figures}
}

// Grade is one client's row of the study's Table I, every column graded
// by the lab, with the figures behind each mark.
type Grade struct {
	Addr             string
	Queries          int
	SecureDNS        Cell
	RandomPort       Cell
	RandomID         Cell
	QueryConsistency Cell
	ModifiedRR       Cell
	ForgedTTL        Cell
	DoS              Cell
}

// Row is the grade's Table I row.
func (g Grade) Row() tablei.Row {
	return tablei.Row{SecureDNS: g.SecureDNS.Mark, RandomPort: g.RandomPort.Mark, RandomID: g.RandomID.Mark,
		QueryConsistency: g.QueryConsistency.Mark, ModifiedRR: g.ModifiedRR.Mark, ForgedTTL: g.ForgedTTL.Mark, DoS: g.DoS.Mark}
}

func (g Grade) cells() []Cell {
	return []Cell{g.SecureDNS, g.RandomPort, g.RandomID, g.QueryConsistency, g.ModifiedRR, g.ForgedTTL, g.DoS}
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
			g.DoS.Mark = tablei.Vulnerable
			g.DoS.Figures += fmt.Sprintf("; no backoff: %d retries of failing names, some %.2fs apart", e.AfterFailures, e.MinInterval)
		}
		out = append(out, g)
	}
	return out
}

func secureDNS(c *ClientRecord) Cell {
	clear, enc := c.Transports["udp"]+c.Transports["tcp"], c.Transports["dot"]+c.Transports["doh"]
	return Cell{Mark: tablei.SecureDNS(clear > 0, enc > 0),
		Figures: fmt.Sprintf("udp %d, tcp %d, dot %d, doh %d; EDNS in %d (max %d)", c.Transports["udp"], c.Transports["tcp"], c.Transports["dot"], c.Transports["doh"], c.EDNS, c.MaxUDPSize)}
}

// randomness grades a client's IDs or source ports with the guard's own
// estimator (guard/entropy: constant, counter, narrow range, small set),
// which also gives the study's sigma and bits.
func randomness(v []uint16, what string) Cell {
	e := entropy.New()
	for _, x := range v {
		e.Observe(x, 0)
	}
	r := e.Result()
	m := Cell{Mark: tablei.Randomness(r.Verdict)}
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

func consistency(c *ClientRecord) Cell {
	e := c.Experiments[string(Baseline)]
	if e == nil {
		return Cell{tablei.Unknown, "no baseline played"}
	}
	m := tablei.QueryConsistency(e.EarlyRepeats, e.Repeats)
	if m == tablei.Unknown {
		return Cell{m, fmt.Sprintf("too few baseline repeats (%d)", e.Repeats)}
	}
	share := float64(e.EarlyRepeats) / float64(e.Repeats)
	return Cell{Mark: m,
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
func reaction(s *Snapshot, c *ClientRecord, base, jump float64, useCounts bool, kinds ...Kind) Cell {
	var figs []string
	var known, vulnerable bool
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
			known, vulnerable = true, true
			figs = append(figs, fmt.Sprintf("%s: used the forged address %d times", name, e.Used))
		}
		if base <= 0 {
			figs = append(figs, fmt.Sprintf("%s %.2f q/s (no baseline)", name, r))
			continue
		}
		known = true
		ratio := r / base
		if ratio >= jump {
			vulnerable = true
		}
		f := fmt.Sprintf("%s x%.1f", name, ratio)
		if e.AfterFailures > 0 {
			f += fmt.Sprintf(" (%d retries after failures, min interval %.2fs)", e.AfterFailures, e.MinInterval)
		}
		figs = append(figs, f)
	}
	figures := "not played"
	if len(figs) > 0 {
		figures = fmt.Sprintf("rate vs baseline %.2f q/s: %s", base, strings.Join(figs, ", "))
	}
	return cell(known, vulnerable, figures)
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

func forgedTTL(s *Snapshot, c *ClientRecord, base float64) Cell {
	m := reaction(s, c, base, ttlJump, false, TTLZero, TTLOne)
	// TTL 10^9: a client that came back for its names in the baseline but
	// never again once told 10^9 will not see a change for 31 years.
	if e, b := c.Experiments[string(TTLHuge)], c.Experiments[string(Baseline)]; e != nil && b != nil && b.Repeats > 0 {
		if m.Mark == tablei.Unknown {
			m.Mark = tablei.Resilient
		}
		long := s.Duration(string(TTLHuge)).Seconds() > 2*meanInterval(b)
		if e.Repeats == 0 && long {
			m.Mark = tablei.Vulnerable
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
	fmt.Fprintln(tw, "client\tqueries\t"+strings.Join(tablei.Columns(), "\t"))
	for _, g := range grades {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", g.Addr, g.Queries, strings.ReplaceAll(g.Row().String(), " ", "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, g := range grades {
		fmt.Fprintf(w, "\n%s\n", g.Addr)
		for i, c := range g.cells() {
			fmt.Fprintf(w, "  %-18s %-3s %s\n", tablei.Columns()[i], c, c.Figures)
		}
	}
	_, err := fmt.Fprintln(w, "\nx vulnerable, ok resilient, ? not enough seen (study's Table I columns a resolver can observe)")
	return err
}
