package lab

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/dnsguard/dnsguard/guard/portpair"
)

// Endpoints are the addresses a lab serves on (IP:PORT each; port 0 picks
// one).
type Endpoints struct {
	Do53  []string // UDP and TCP on the same port
	DoT   []string
	DoH   []string // any path
	Probe []string // TCP accepted and counted (use of a forged address)
}

// Listeners are a lab's open endpoints, made by Listen and served by Run.
type Listeners struct {
	addrs   []string // as URLs: udp+tcp://, tls://, https://…/dns-query, probe://
	serve   []func(ctx context.Context) error
	closers []io.Closer
}

// Addrs returns the endpoints as URLs, ports resolved.
func (ls *Listeners) Addrs() []string { return ls.addrs }

// Close closes every endpoint (Run does it when it returns).
func (ls *Listeners) Close() {
	for _, c := range ls.closers {
		c.Close()
	}
}

// Listen opens every endpoint; tlsCfg serves DoT and DoH.
func (l *Lab) Listen(ep Endpoints, tlsCfg *tls.Config) (*Listeners, error) {
	if len(ep.DoT)+len(ep.DoH) > 0 && tlsCfg == nil {
		return nil, errors.New("lab: DoT and DoH need a certificate")
	}
	ls := &Listeners{}
	tcp := func(a, scheme, path string) (net.Listener, error) {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return nil, fmt.Errorf("lab: %w", err)
		}
		ls.closers = append(ls.closers, ln)
		ls.addrs = append(ls.addrs, scheme+ln.Addr().String()+path)
		return ln, nil
	}
	for _, a := range ep.Do53 {
		pc, ln, err := portpair.Listen(a)
		if err != nil {
			ls.Close()
			return nil, fmt.Errorf("lab: %w", err)
		}
		ls.closers = append(ls.closers, pc, ln)
		ls.addrs = append(ls.addrs, "udp+tcp://"+pc.LocalAddr().String())
		ls.serve = append(ls.serve,
			func(ctx context.Context) error { return l.ServeUDP(ctx, pc) },
			func(ctx context.Context) error { return l.ServeStream(ctx, ln, "tcp") })
	}
	for _, a := range ep.DoT {
		ln, err := tcp(a, "tls://", "")
		if err != nil {
			ls.Close()
			return nil, err
		}
		ls.serve = append(ls.serve, func(ctx context.Context) error {
			return l.ServeStream(ctx, tls.NewListener(ln, tlsCfg), "dot")
		})
	}
	for _, a := range ep.DoH {
		ln, err := tcp(a, "https://", "/dns-query")
		if err != nil {
			ls.Close()
			return nil, err
		}
		ls.serve = append(ls.serve, func(ctx context.Context) error { return l.ServeDoH(ctx, tls.NewListener(ln, tlsCfg)) })
	}
	for _, a := range ep.Probe {
		ln, err := tcp(a, "probe://", "")
		if err != nil {
			ls.Close()
			return nil, err
		}
		ls.serve = append(ls.serve, func(ctx context.Context) error { return l.ServeProbe(ctx, ln) })
	}
	return ls, nil
}

// Run serves the lab on ls until ctx ends or an endpoint fails, rewriting
// the record file every `every` and once more at the end, and closes ls.
// It returns the first serving error, joined with the last record write's.
func (l *Lab) Run(ctx context.Context, ls *Listeners, record string, every time.Duration) error {
	defer ls.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	for _, f := range ls.serve {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil {
				select {
				case errs <- err:
				default:
				}
				cancel()
			}
		}()
	}
	l.log.Info("lab serving", "listen", strings.Join(ls.addrs, " "), "schedule", l.sched.String(), "zone", l.zone.String(), "record", record)

	tick := time.NewTicker(every)
	defer tick.Stop()
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case runErr = <-errs:
			break loop
		case <-tick.C:
			if err := l.Snapshot().WriteFile(record); err != nil {
				l.log.Error("writing the record", "err", err)
			}
		}
	}
	cancel()
	wg.Wait()
	if err := l.Snapshot().WriteFile(record); err != nil {
		return errors.Join(runErr, err)
	}
	return runErr
}
