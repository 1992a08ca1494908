package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
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
		class := d.Class
		if class == "" {
			class = "-"
		}
		fmt.Fprintf(stdout, "%s: class %s, strict %v, exempt %v\n", *override, class, d.Strict, d.Exempt)
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
	return device.WriteTable(stdout, views)
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

func yesNo(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "yes", "1", "true", "on":
		return true, nil
	case "no", "0", "false", "off":
		return false, nil
	}
	return false, fmt.Errorf("%q is not yes or no", s)
}
