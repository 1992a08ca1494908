//go:build !router

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/dnsguard/dnsguard/guard/audit"
)

const auditUsage = `usage: dnsguard audit [--json] [--html FILE] [--device MAC]... FILE|DIR ...

Reads pcap and pcapng captures (a directory: every .pcap, .pcapng, .cap and
.dmp under it, in name order; each file counts as one boot of its devices)
and reports each device's DNS hygiene: the study's passive metrics,
transaction-ID and source-port randomness, and its Table I columns.
`

// cmdAudit runs `dnsguard audit`.
func cmdAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, auditUsage); fs.PrintDefaults() }
	jsonOut := fs.Bool("json", false, "write the report as JSON on stdout")
	htmlOut := fs.String("html", "", "also write a self-contained HTML report with plots to `FILE`")
	verbose := fs.Bool("v", false, "log each capture read")
	var devices listFlag
	fs.Var(&devices, "device", "report only this device (MAC, or IP without a link layer); repeatable")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errUsage
	}
	files, err := captureFiles(fs.Args())
	if err != nil {
		return err
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	bar := newProgress(stderr, files)
	a, err := audit.New(audit.Options{Devices: devices, Logger: log, Progress: bar.update})
	if err != nil {
		return err
	}
	var failed []error
	for i, f := range files {
		bar.start(i)
		if err := a.AddFile(ctx, f, uint32(i)); err != nil {
			if ctx.Err() != nil {
				bar.done()
				return ctx.Err()
			}
			failed = append(failed, err)
			log.Warn("capture not fully read", "err", err)
		}
	}
	bar.done()
	rep := a.Report()
	if *jsonOut {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteText(stdout)
	}
	if err != nil {
		return err
	}
	if *htmlOut != "" {
		if err := writeHTML(*htmlOut, rep); err != nil {
			return err
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("audit: %d of %d captures could not be read to the end: %w", len(failed), len(files), errors.Join(failed...))
	}
	return nil
}

func writeHTML(path string, rep *audit.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if err := rep.WriteHTML(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// captureFiles expands directories into the capture files under them.
func captureFiles(args []string) ([]string, error) {
	var out []string
	for _, arg := range args {
		st, err := os.Stat(arg)
		if err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		if !st.IsDir() {
			out = append(out, arg)
			continue
		}
		var found []string
		err = filepath.WalkDir(arg, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch strings.ToLower(filepath.Ext(p)) {
			case ".pcap", ".pcapng", ".cap", ".dmp":
				if !d.IsDir() {
					found = append(found, p)
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		if len(found) == 0 {
			return nil, fmt.Errorf("audit: no capture files (.pcap, .pcapng, .cap) under %s", arg)
		}
		sort.Strings(found)
		out = append(out, found...)
	}
	return out, nil
}

// progress draws a bar on stderr when it is a terminal and the audit has
// run for more than a second.
type progress struct {
	w     io.Writer
	tty   bool
	files []string
	sizes []int64
	total int64
	doneB int64 // bytes of the files finished
	cur   int
	began time.Time
	last  time.Time
	drawn bool
}

func newProgress(w io.Writer, files []string) *progress {
	p := &progress{w: w, files: files, began: time.Now()}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	for _, f := range files {
		var n int64
		if st, err := os.Stat(f); err == nil {
			n = st.Size()
		}
		p.sizes = append(p.sizes, n)
		p.total += n
	}
	return p
}

func (p *progress) start(i int) {
	if i > 0 {
		p.doneB += p.sizes[i-1]
	}
	p.cur = i
	p.update(0, p.sizes[i])
}

func (p *progress) update(done, _ int64) {
	if !p.tty {
		return
	}
	now := time.Now()
	if now.Sub(p.began) < time.Second || now.Sub(p.last) < 100*time.Millisecond {
		return
	}
	p.last = now
	at := p.doneB + done
	frac := 0.0
	if p.total > 0 {
		frac = float64(at) / float64(p.total)
	}
	const width = 30
	n := int(frac * width)
	mbs := float64(at) / 1e6 / now.Sub(p.began).Seconds()
	fmt.Fprintf(p.w, "\r[%s%s] %5.1f%% %d/%d files %.0f MB/s ", strings.Repeat("#", n), strings.Repeat(".", width-n), 100*frac, p.cur+1, len(p.files), mbs)
	p.drawn = true
}

func (p *progress) done() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
