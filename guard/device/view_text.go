package device

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable writes the device table `dnsguard devices` prints: a row per
// confirmed device (its counters, its TXID and port grades, Table I),
// then a line per resolver bypass attempt and per strict device's reason.
func WriteTable(w io.Writer, all []View) error {
	// Source MACs neither the neighbour table nor a DHCP lease confirmed
	// (spoofed frames, a device just arrived) are counted, not listed.
	views := make([]View, 0, len(all))
	for _, v := range all {
		if !v.Unconfirmed {
			views = append(views, v)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tMAC\tIP\tCLASS\tQUERIES\tREFUSED\tLIMITED\tBYPASS\tTXID\tPORT\tEDNS\tSECURE\tRPORT\tRID\tCONSIST\tMODRR\tFTTL\tDOS\tHARDCODED")
	for _, v := range views {
		name := v.Name
		if name == "" {
			name = "-"
		}
		mac := v.MAC
		if mac == "" {
			mac = "-"
		}
		ip := "-"
		if len(v.IPs) > 0 {
			ip = v.IPs[0]
		}
		class := v.Class
		if class == "" {
			class = "-"
		}
		if v.Exempt {
			class += "(exempt)"
		}
		t := v.TableI
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			name, mac, ip, class, v.Queries, v.Refused, v.RateLimited, v.BypassTotal,
			gradeText(v.TXID), gradeText(v.Port), v.EDNS,
			t.SecureDNS, t.RandomPort, t.RandomID, t.QueryConsistency, t.ModifiedRR, t.ForgedTTL, t.DoS, t.HardCodedResolver)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if n := len(all) - len(views); n > 0 {
		fmt.Fprintf(w, "%d unconfirmed source MACs (no neighbour entry or DHCP lease agrees) not listed; --json has them\n", n)
	}
	// The attempts, one line each, under the table.
	for _, v := range views {
		for _, a := range v.Bypass {
			who := v.Name
			if who == "" {
				who = v.ID
			}
			fmt.Fprintf(w, "bypass: %s %s %s x%d (last %s)\n", who, a.Kind, a.Target, a.Count, a.Last.UTC().Format(time.RFC3339))
		}
		if v.StrictReason != "" {
			fmt.Fprintf(w, "strict: %s: %s\n", orDash(v.Name, v.ID), v.StrictReason)
		}
	}
	return nil
}

// gradeText is "weak(counter) s=18900" style: the verdict, then the
// study's sigma beside it.
func gradeText(g Grade) string {
	var b strings.Builder
	b.WriteString(string(g.Verdict))
	if g.Reason != "" && g.Verdict == "weak" { // why it is insufficient is in --json
		b.WriteString("(" + g.Reason + ")")
	}
	if g.N > 0 {
		b.WriteString(" s=" + strconv.FormatFloat(g.Sigma, 'f', 0, 64))
	}
	return b.String()
}

func orDash(s, alt string) string {
	if s != "" {
		return s
	}
	return alt
}
