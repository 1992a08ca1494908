package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// readyFile is run --ready-file: written once every listener serves, and
// again after each SIGHUP, so that supervisors and tests wait on a file
// instead of a log line. Lines: "pid N", "listen ADDR" for each bound
// listen address, "api ADDR" when the API serves, "reloads N" and
// "reload_failures N" (SIGHUPs applied and refused).
type readyFile struct {
	path            string // "": no ready file
	listen          []netip.AddrPort
	api             string
	reloads, failed int
}

// clear removes a file left by a guard that was killed: it says nothing
// about this one.
func (r *readyFile) clear() error {
	if r.path == "" {
		return nil
	}
	if err := os.Remove(r.path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("ready file: %w", err)
	}
	return nil
}

// write writes the file atomically: a temporary file beside it, renamed
// over it, so that whoever waits never reads half of it.
func (r *readyFile) write() error {
	if r.path == "" {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "pid %d\n", os.Getpid())
	for _, a := range r.listen {
		fmt.Fprintf(&b, "listen %s\n", a)
	}
	if r.api != "" {
		fmt.Fprintf(&b, "api %s\n", r.api)
	}
	fmt.Fprintf(&b, "reloads %d\nreload_failures %d\n", r.reloads, r.failed)
	tmp, err := os.CreateTemp(filepath.Dir(r.path), "."+filepath.Base(r.path)+".*")
	if err != nil {
		return fmt.Errorf("ready file: %w", err)
	}
	_, err = tmp.WriteString(b.String())
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), r.path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("ready file: %w", err)
	}
	return nil
}

// remove removes the file at exit.
func (r *readyFile) remove() {
	if r.path != "" {
		os.Remove(r.path)
	}
}

// rewrite writes the file again after a reload; a failure is logged (the
// guard serves on, and the file keeps its last whole version).
func (r *readyFile) rewrite(log *slog.Logger) {
	if err := r.write(); err != nil {
		log.Error("rewriting the ready file", "err", err)
	}
}
