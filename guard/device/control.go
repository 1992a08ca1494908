package device

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"
)

// Views returns the device table of the running registry.
func (r *Registry) Views() []View {
	recs, unconfirmed := r.snapshot()
	r.mu.Lock()
	cls := r.cls
	r.mu.Unlock()
	out := make([]View, 0, len(recs))
	for _, rec := range recs {
		v := ViewOf(rec, cls)
		v.Unconfirmed = unconfirmed[rec.ID]
		out = append(out, v)
	}
	return out
}

// ControlPath is where the running guard serves its device table: a unix
// socket beside the state file.
func ControlPath(stateFile string) string { return stateFile + ".sock" }

// Control serves the device table as JSON on a unix socket (GET /devices),
// for `dnsguard devices` while the guard holds the state file.
type Control struct {
	srv  *http.Server
	ln   net.Listener
	path string
	done chan struct{}
}

// Stats are the registry's counters, as the control socket serves them.
type Stats struct {
	MACWaits         uint64 `json:"mac_waits"`           // queries that waited for their MAC
	MACWaitsTimedOut uint64 `json:"mac_waits_timed_out"` // of those, waits that ended without one
}

// Stats returns the registry's counters.
func (r *Registry) Stats() Stats {
	return Stats{MACWaits: r.Waits.Taken.Load(), MACWaitsTimedOut: r.Waits.TimedOut.Load()}
}

// ServeControl starts serving reg's table on the unix socket at path,
// replacing a stale socket left by a guard that was killed.
func ServeControl(path string, reg *Registry, log *slog.Logger) (*Control, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("device: control socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("device: control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("device: control socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /devices", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(reg.Views()); err != nil {
			log.Debug("control: writing device table", "err", err)
		}
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(reg.Stats())
	})
	mux.HandleFunc("PUT /devices/{id}/override", func(w http.ResponseWriter, req *http.Request) {
		var o Override
		if err := json.NewDecoder(http.MaxBytesReader(w, req.Body, 4096)).Decode(&o); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		d, err := reg.SetOverride(req.PathValue("id"), &o)
		if errors.Is(err, ErrUnknownDevice) {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(d)
	})
	c := &Control{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		ln:   ln,
		path: path,
		done: make(chan struct{}),
	}
	go func() {
		defer close(c.done)
		if err := c.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("control socket stopped", "err", err)
		}
	}()
	return c, nil
}

// Close stops serving and removes the socket.
func (c *Control) Close(ctx context.Context) error {
	err := c.srv.Shutdown(ctx)
	<-c.done
	os.Remove(c.path)
	return err
}

func unixClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

// PutOverride sets a device's policy override in a running guard (an
// empty override clears it) and returns the decision it now gets.
func PutOverride(ctx context.Context, path, id string, o Override) (Decision, error) {
	body, err := json.Marshal(o)
	if err != nil {
		return Decision{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://dnsguard/devices/"+url.PathEscape(id)+"/override", bytes.NewReader(body))
	if err != nil {
		return Decision{}, err
	}
	resp, err := unixClient(path).Do(req)
	if err != nil {
		return Decision{}, fmt.Errorf("device: control socket %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return Decision{}, fmt.Errorf("device: override %s: %s: %s", id, resp.Status, bytes.TrimSpace(msg))
	}
	var d Decision
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		return Decision{}, fmt.Errorf("device: override %s: %w", id, err)
	}
	return d, nil
}

// FetchViews asks a running guard for its device table.
func FetchViews(ctx context.Context, path string) ([]View, error) {
	client := unixClient(path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://dnsguard/devices", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("device: control socket %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("device: control socket %s: %s", path, resp.Status)
	}
	var views []View
	if err := json.NewDecoder(resp.Body).Decode(&views); err != nil {
		return nil, fmt.Errorf("device: control socket %s: %w", path, err)
	}
	return views, nil
}

// FetchStats asks a running guard for its registry's counters.
func FetchStats(ctx context.Context, path string) (Stats, error) {
	var st Stats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://dnsguard/stats", nil)
	if err != nil {
		return st, err
	}
	resp, err := unixClient(path).Do(req)
	if err != nil {
		return st, fmt.Errorf("device: control socket %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("device: control socket %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("device: control socket %s: %w", path, err)
	}
	return st, nil
}
