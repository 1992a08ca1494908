package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dnsguard/dnsguard/guard/entropy"
)

// WriteJSON writes the report as indented JSON, without plot data.
func (r *Report) WriteJSON(w io.Writer) error {
	c := *r
	c.Devices = make([]Device, len(r.Devices))
	for i, d := range r.Devices {
		d.Plot = nil
		c.Devices[i] = d
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(&c); err != nil {
		return fmt.Errorf("audit: writing JSON: %w", err)
	}
	return nil
}

// WriteText writes the terminal table and a few lines per device.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tQUERIES\tNAMES\tA/AAAA\tEDNS\tTXID\tBITS\tPORT\tBITS\tRESOLVERS\tENC\tTABLE I (dns port id cons rr ttl dos)")
	for _, d := range r.Devices {
		name := d.MAC
		if name == "" {
			name = d.IP
		}
		if d.Queries == 0 {
			fmt.Fprintf(tw, "%s\t0\t-\t-\t-\tnone seen\t-\tnone seen\t-\t-\t%s\t%s\n", name, encSummary(d.Encrypted), d.TableI.String())
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f%%/%.0f%%\t%.0f%%\t%s\t%.1f\t%s\t%.1f\t%s\t%s\t%s\n",
			name, d.Queries, d.Names.Distinct, 100*d.Types.AShare, 100*d.Types.AAAA, 100*d.EDNS.Share,
			verdictText(d.TXID), d.TXID.Bits, verdictText(d.Port), d.Port.Bits,
			resolverSummary(d.Resolvers), encSummary(d.Encrypted), d.TableI.String())
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("audit: writing table: %w", err)
	}
	var b strings.Builder
	for _, d := range r.Devices {
		name := d.MAC + d.IP
		if d.Queries == 0 {
			fmt.Fprintf(&b, "\n%s: %s\n", name, d.Note)
			continue
		}
		fmt.Fprintf(&b, "\n%s (%s): %d queries, %d answers, %.2f/min", name, strings.Join(d.IPs, " "), d.Queries, d.Responses, d.RatePerM)
		if d.First != nil {
			fmt.Fprintf(&b, ", %s .. %s", d.First.Format(time.RFC3339), d.Last.Format(time.RFC3339))
		}
		fmt.Fprintf(&b, "\n  txid: %s\n  port: %s\n", d.TXID.Detail, d.Port.Detail)
		fmt.Fprintf(&b, "  intervals: median %.3gs p90 %.3gs; max %d/s, %d bursts; retransmissions %d, retries %d\n",
			d.Intervals.MedianS, d.Intervals.P90S, d.Timing.MaxPerSecond, d.Timing.Bursts, d.Retries.Retransmissions, d.Retries.Retries)
		fmt.Fprintf(&b, "  ttl: %d answers, min %d max %d; %d of %d re-queries before expiry\n", d.TTL.Answers, d.TTL.Min, d.TTL.Max, d.TTL.Early, d.TTL.Requeries)
		var top []string
		for i, n := range d.Names.Top {
			if i == 3 {
				break
			}
			top = append(top, fmt.Sprintf("%s (%d)", n.Name, n.Count))
		}
		fmt.Fprintf(&b, "  names: %s\n", strings.Join(top, ", "))
		for _, p := range d.Names.Periodic {
			fmt.Fprintf(&b, "  periodic: %s every %.1fs (%d times)\n", p.Name, p.EveryS, p.Repeats)
		}
	}
	if len(r.Silent) > 0 {
		fmt.Fprintf(&b, "\nhosts that sent no DNS: %s\n", strings.Join(r.Silent, " "))
	}
	if len(r.Resolvers) > 0 {
		fmt.Fprintf(&b, "hosts that answered DNS: %s\n", strings.Join(r.Resolvers, " "))
	}
	if len(r.NetworkResolvers) > 0 {
		fmt.Fprintf(&b, "network resolvers: %s\n", strings.Join(r.NetworkResolvers, " "))
	}
	var corrupt, failed int64
	for _, f := range r.Files {
		corrupt += f.Corrupt
		if f.Error != "" {
			failed++
			fmt.Fprintf(&b, "error: %s\n", f.Error)
		}
	}
	fmt.Fprintf(&b, "%d captures read (%d failed), %d corrupt packets skipped\n", len(r.Files), failed, corrupt)
	_, err := io.WriteString(w, b.String())
	return err
}

func verdictText(f Field) string {
	if f.Reason == "" {
		return string(f.Verdict)
	}
	if f.Verdict == entropy.Insufficient {
		return "insufficient"
	}
	return string(f.Verdict) + " (" + f.Reason + ")"
}

func resolverSummary(rs []Resolver) string {
	var s []string
	for i, r := range rs {
		if i == 3 {
			s = append(s, "...")
			break
		}
		x := r.Addr
		if r.Own {
			x += "*"
		}
		s = append(s, x)
	}
	return strings.Join(s, ",")
}

func encSummary(e Encrypted) string {
	if e.DoT+e.DoH+e.DoQ == 0 {
		return "none"
	}
	return fmt.Sprintf("DoT:%d DoH:%d DoQ:%d", e.DoT, e.DoH, e.DoQ)
}
