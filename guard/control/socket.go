package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/dnsguard/dnsguard/guard/device"
	"github.com/dnsguard/dnsguard/guard/minihttp"
)

// SocketPath is where the running guard serves its device table: a unix
// socket beside the state file.
func SocketPath(stateFile string) string { return stateFile + ".sock" }

// Socket serves the device table as JSON on a unix socket (GET /devices,
// GET /stats, PUT /devices/{id}/override), for `dnsguard devices` while the guard
// holds the state file, and lets a test wait for the registry's next
// round of upkeep (GET /wait?passes=N). It is HTTP/1.1 (curl
// --unix-socket works) served by minihttp, which keeps net/http out of
// the router binary.
type Socket struct {
	srv  *minihttp.Server
	path string
	done chan struct{}
	stop context.CancelFunc // ends the waits being served
}

// maxWait bounds one GET /wait; WaitPasses asks again.
const maxWait = 10 * time.Second

// ServeSocket starts serving reg's table on the unix socket at path,
// replacing a stale socket left by a guard that was killed.
func ServeSocket(path string, reg *device.Registry, log *slog.Logger) (*Socket, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control: socket: %w", err)
	}
	// By address, not a string to resolve: no resolver in the binary
	// (see guard/upstream/dial.go).
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control: socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control: socket: %w", err)
	}
	mux := new(minihttp.Mux)
	mux.HandleFunc("GET /devices", func(w *minihttp.ResponseWriter, _ *minihttp.Request) {
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(reg.Views()); err != nil {
			log.Debug("control: writing device table", "err", err)
		}
	})
	mux.HandleFunc("GET /stats", func(w *minihttp.ResponseWriter, _ *minihttp.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(reg.Stats())
	})
	// GET /wait?passes=N answers the registry's counters once more than
	// N rounds of upkeep are done, or after maxWait, or at Close.
	waits, stop := context.WithCancel(context.Background())
	mux.HandleFunc("GET /wait", func(w *minihttp.ResponseWriter, req *minihttp.Request) {
		q, err := url.ParseQuery(req.RawQuery)
		if err != nil {
			minihttp.Error(w, err.Error(), 400)
			return
		}
		after, err := strconv.ParseUint(q.Get("passes"), 10, 64)
		if err != nil {
			minihttp.Error(w, "want ?passes=N", 400)
			return
		}
		ctx, cancel := context.WithTimeout(waits, maxWait)
		defer cancel()
		_ = reg.Passes.Wait(ctx, after) // the answer says how many there are
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(reg.Stats())
	})
	mux.HandleFunc("PUT /devices/{id}/override", func(w *minihttp.ResponseWriter, req *minihttp.Request) {
		if req.ContentLength > maxBody {
			minihttp.Error(w, "override larger than 4096 octets", 413)
			return
		}
		d, code, err := setOverride(reg, req.PathValue("id"), req.Body)
		if err != nil {
			minihttp.Error(w, err.Error(), code)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(d)
	})
	c := &Socket{
		srv:  &minihttp.Server{Handler: mux, MaxBody: maxBody, Log: log},
		path: path,
		done: make(chan struct{}),
		stop: stop,
	}
	go func() {
		defer close(c.done)
		if err := c.srv.Serve(ln); err != nil && !errors.Is(err, minihttp.ErrServerClosed) {
			log.Error("control socket stopped", "err", err)
		}
	}()
	return c, nil
}

// Close stops serving (requests being answered finish until ctx ends) and
// removes the socket.
func (c *Socket) Close(ctx context.Context) error {
	c.stop()
	err := c.srv.Shutdown(ctx)
	<-c.done
	os.Remove(c.path)
	return err
}

// socketDo sends one request to the guard's socket at path.
func socketDo(ctx context.Context, path, method, target string, body []byte) (*minihttp.Response, error) {
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialUnix(ctx, "unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	}
	var h minihttp.Header
	if body != nil {
		h = minihttp.Header{"content-type": "application/json"}
	}
	resp, err := minihttp.Do(ctx, dial, method, "dnsguard", target, h, body)
	if err != nil {
		return nil, fmt.Errorf("control: socket %s: %w", path, err)
	}
	return resp, nil
}

// PutOverride sets a device's policy override in a running guard (an
// empty override clears it) and returns the decision it now gets.
func PutOverride(ctx context.Context, path, id string, o device.Override) (device.Decision, error) {
	body, err := json.Marshal(o)
	if err != nil {
		return device.Decision{}, err
	}
	resp, err := socketDo(ctx, path, "PUT", "/devices/"+url.PathEscape(id)+"/override", body)
	if err != nil {
		return device.Decision{}, err
	}
	if resp.StatusCode != 200 {
		msg := resp.Body[:min(len(resp.Body), 512)]
		return device.Decision{}, fmt.Errorf("control: override %s: %s: %s", id, resp.Status, bytes.TrimSpace(msg))
	}
	var d device.Decision
	if err := json.Unmarshal(resp.Body, &d); err != nil {
		return device.Decision{}, fmt.Errorf("control: override %s: %w", id, err)
	}
	return d, nil
}

// FetchViews asks a running guard for its device table.
func FetchViews(ctx context.Context, path string) ([]device.View, error) {
	return socketGet[[]device.View](ctx, path, "/devices")
}

// FetchDeviceStats asks a running guard for its registry's counters.
func FetchDeviceStats(ctx context.Context, path string) (device.Stats, error) {
	return socketGet[device.Stats](ctx, path, "/stats")
}

// WaitPasses waits until the running guard's registry has done more than
// after rounds of upkeep (each flushes, confirms, reads the leases and
// sets the exempt set), and returns its counters then. To know that a
// whole round ran after some point, read Passes then and wait past one
// more than it (the round under way at that point counts once done).
func WaitPasses(ctx context.Context, path string, after uint64) (device.Stats, error) {
	for {
		st, err := socketGet[device.Stats](ctx, path, "/wait?passes="+strconv.FormatUint(after, 10))
		if err != nil || st.Passes > after {
			return st, err
		}
		if err := ctx.Err(); err != nil {
			return st, fmt.Errorf("control: socket %s: waiting for pass %d: %w", path, after+1, err)
		}
	}
}

// socketGet asks the guard's socket at path for target's JSON.
func socketGet[T any](ctx context.Context, path, target string) (T, error) {
	var v T
	resp, err := socketDo(ctx, path, "GET", target, nil)
	if err != nil {
		return v, err
	}
	if resp.StatusCode != 200 {
		return v, fmt.Errorf("control: socket %s: %s", path, resp.Status)
	}
	if err := json.Unmarshal(resp.Body, &v); err != nil {
		return v, fmt.Errorf("control: socket %s: %w", path, err)
	}
	return v, nil
}
