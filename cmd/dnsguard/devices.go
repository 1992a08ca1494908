package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dnsguard/dnsguard/guard/control"
	"github.com/dnsguard/dnsguard/guard/device"
	"github.com/dnsguard/dnsguard/policy"
)

const devicesUsage = `usage: dnsguard devices [--json] [--state FILE] [--config FILE]
       dnsguard devices --override MAC [--class NAME] [--strict yes|no] [--exempt yes|no] [--clear]

Prints the device table: name, MAC, addresses, queries, bypass attempts,
the transaction-ID and source-port verdicts (with the study's sigma), and
the columns of the study's Table I as the guard grades them live
(x vulnerable, ok not, ? not enough seen yet, - not gradable from live
traffic). It asks the running guard (the socket beside the state file)
and reads the state file itself when no guard runs. --override sets a
device's policy in the running guard (kept in its record): a class by
name, strict or not, exempt from interception or not; --clear removes it.

flags:
`

func cmdDevices(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("devices", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, devicesUsage); fs.PrintDefaults() }
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	state := fs.String("state", "", "state `FILE` (default: the config's state_file)")
	config := fs.String("config", "", "config `FILE` (for the state file and the classes); default: embedded")
	override := fs.String("override", "", "set the policy override of the device with this `MAC`")
	class := fs.String("class", "", "with --override: the device's class `NAME`")
	strict := fs.String("strict", "", "with --override: `yes` or no")
	exempt := fs.String("exempt", "", "with --override: `yes` or no")
	clearIt := fs.Bool("clear", false, "with --override: remove the override")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "devices: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	cfg, err := policy.Load(*config)
	if err != nil {
		return err
	}
	if *state != "" {
		cfg.State.File = *state
	}
	if *override != "" {
		o := device.Override{Class: *class}
		if !*clearIt {
			for _, f := range []struct {
				val string
				p   **bool
			}{{*strict, &o.Strict}, {*exempt, &o.Exempt}} {
				if f.val == "" {
					continue
				}
				b, err := yesNo(f.val)
				if err != nil {
					fmt.Fprintln(stderr, "devices:", err)
					return errUsage
				}
				*f.p = &b
			}
			if o == (device.Override{}) {
				fmt.Fprintln(stderr, "devices: --override needs --class, --strict, --exempt or --clear")
				return errUsage
			}
		} else {
			o = device.Override{}
		}
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		d, err := control.PutOverride(cctx, control.SocketPath(cfg.State.File), *override, o)
		if err != nil {
			return fmt.Errorf("devices: %w (overrides need the running guard)", err)
		}
		fmt.Fprintf(stdout, "%s: class %s, strict %v, exempt %v\n", *override, orDash(d.Class, "-"), d.Strict, d.Exempt)
		return nil
	}
	views, err := loadViews(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(views)
	}
	return printDevices(stdout, views)
}

// loadViews asks the running guard, else reads the state file.
func loadViews(ctx context.Context, cfg *policy.Config) ([]device.View, error) {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	views, err := control.FetchViews(cctx, control.SocketPath(cfg.State.File))
	if err == nil {
		return views, nil
	}
	recs, rerr := device.ReadRecords(cfg.State.File, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if rerr != nil {
		if errors.Is(rerr, device.ErrLocked) {
			return nil, fmt.Errorf("devices: a guard holds %s but does not answer on its socket (%v)", cfg.State.File, err)
		}
		return nil, fmt.Errorf("devices: %w", rerr)
	}
	cls := device.NewClassifier(cfg.Classes)
	views = make([]device.View, 0, len(recs))
	for _, r := range recs {
		views = append(views, device.ViewOf(r, cls))
	}
	return views, nil
}

func printDevices(w io.Writer, all []device.View) error {
	// Source MACs neither the neighbour table nor a DHCP lease confirmed
	// (spoofed frames, a device just arrived) are counted, not listed.
	views := make([]device.View, 0, len(all))
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
func gradeText(g device.Grade) string {
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

func yesNo(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "yes", "1", "true", "on":
		return true, nil
	case "no", "0", "false", "off":
		return false, nil
	}
	return false, fmt.Errorf("%q is not yes or no", s)
}
