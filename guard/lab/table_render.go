package lab

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dnsguard/dnsguard/guard/emulate"
	"github.com/miekg/dns"
)

// ForgedAnswers reports how many of the answers s counts carried the
// lab's forged addresses (DefaultForgery's A and AAAA).
func ForgedAnswers(s emulate.Summary) int {
	f := DefaultForgery()
	return s.Addrs[f.A] + s.Addrs[f.AAAA]
}

func perMinute(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Minutes()
}

// Describe says in a few words what a device got: the share of usable
// answers, then forged addresses, timeouts, SERVFAIL and REFUSED answers,
// inflated answers and flood copies, where there are any.
func Describe(s emulate.Summary) string {
	var parts []string
	pct := func(n int) int {
		if s.Queries == 0 {
			return 0
		}
		return 100 * n / s.Queries
	}
	parts = append(parts, fmt.Sprintf("%d%% usable", pct(s.Usable)))
	if f := ForgedAnswers(s); f > 0 {
		parts = append(parts, fmt.Sprintf("%d forged addr", f))
	}
	if s.Timeouts > 0 {
		parts = append(parts, fmt.Sprintf("%d timeouts", s.Timeouts))
	}
	if s.ServFail > 0 {
		parts = append(parts, fmt.Sprintf("%d SERVFAIL", s.ServFail))
	}
	if s.Refused > 0 {
		parts = append(parts, fmt.Sprintf("%d REFUSED", s.Refused))
	}
	if r := s.RecordsPerAnswer(); r > 2.5 {
		parts = append(parts, fmt.Sprintf("%.0f RR/answer", r))
	}
	if s.Answers > 0 && s.Datagrams > s.Answers*3/2 {
		parts = append(parts, fmt.Sprintf("%.0f datagrams/answer", float64(s.Datagrams)/float64(s.Answers)))
	}
	return strings.Join(parts, ", ")
}

func edeSummary(s emulate.Summary) string {
	if len(s.EDE) == 0 {
		return "-"
	}
	codes := make([]int, 0, len(s.EDE))
	for c := range s.EDE {
		codes = append(codes, int(c))
	}
	sort.Ints(codes)
	var parts []string
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%s %d", edeName(uint16(c)), s.EDE[uint16(c)]))
	}
	return strings.Join(parts, ", ")
}

func edeName(c uint16) string {
	if n, ok := dns.ExtendedErrorCodeToString[c]; ok {
		return strings.ReplaceAll(n, " ", "")
	}
	return fmt.Sprint("EDE", c)
}

// WriteTable writes the rows as the lab table: what the run was, then a
// line per experiment (an error line for one that could not run).
func WriteTable(w io.Writer, o TableOptions, rows []TableRow) error {
	fmt.Fprintf(w, "device profile %s (re-asks every %v whatever the TTL, x%d on failure, %v timeout), names %s;\n",
		o.Profile.Name, o.Profile.Interval, o.Profile.FailFactor, o.Profile.Timeout, strings.Join(o.Names, " "))
	fmt.Fprintf(w, "each run: lab honest for %v, then the experiment, %v in all; lab TTL %d s; guard with its default config.\n", o.Baseline, o.Duration, o.TTL)
	if o.DNSSEC {
		fmt.Fprintln(w, "dnssec: the lab signs its zone (keys made per run); the guard validates with option dnssec '1' and the lab's DS as its trust anchor.")
	}
	if len(o.Fresh) > 0 {
		fmt.Fprintf(w, "a second device asks %s from the experiment's start (a name the guard has not cached).\n", strings.Join(o.Fresh, " "))
	}
	fmt.Fprintln(w, "through the guard the device sends EDNS so the guard's Extended DNS Errors can be counted.")
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "experiment\tdirect: device gets\tdevice q/min\tthrough guard: device gets\tdevice q/min\tSERVFAIL (refused)\tupstream q/min (experiment phase)\tstale answers\tEDE seen")
	for _, r := range rows {
		if r.Err != nil {
			fmt.Fprintf(tw, "%s\terror: %v\n", r.Experiment, strings.SplitN(r.Err.Error(), "\n", 2)[0])
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%.0f\t%d\t%.1f\t%d\t%s\n",
			r.Experiment, Describe(r.Direct), perMinute(r.Direct.Queries, o.Duration),
			Describe(r.Guarded), perMinute(r.Guarded.Queries, o.Duration), r.Guarded.ServFail, perMinute(r.Upstream, r.UpstreamPhase), r.Guarded.EDE[3], edeSummary(r.Guarded))
	}
	return tw.Flush()
}
