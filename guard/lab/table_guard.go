package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// guardRun is a dnsguard run process in front of a lab.
type guardRun struct {
	cmd     *exec.Cmd
	addr    string
	logFile string        // its stderr, written by the guard itself
	done    chan struct{} // closed once the process is reaped
}

func (g *guardRun) logs() string {
	b, _ := os.ReadFile(g.logFile)
	return string(b)
}

// guardConfig is the guard's config in front of the lab at upstream,
// listening on addr, with its state in dir, and extra appended.
func guardConfig(addr, upstream, dir, extra string) string {
	return fmt.Sprintf(`config dnsguard 'main'
	list listen '%s'
	list upstream 'udp://%s'
	option state_file '%s'
	option log_level 'info'
	# The lab's zone is unsigned unless --dnssec (a section below turns
	# validation on with the lab's own trust anchor): no root chain here.
	option dnssec '0'

config answers
	# The lab's honest answers are in documentation ranges.
	list allow_private '198.51.100.0/24'
	list allow_private '3fff:51::/32'
%s
`, addr, upstream, filepath.Join(dir, "state.db"), extra)
}

// startGuardRun starts binary as a guard in front of upstream and waits
// until it serves: until its --ready-file is there. The guard listens on
// a port of the kernel's choosing (no port picked free beforehand that
// another process may take meanwhile); the ready file names it.
func startGuardRun(ctx context.Context, binary, upstream, extraConfig, dir string) (*guardRun, error) {
	conf := filepath.Join(dir, "dnsguard.conf")
	if err := os.WriteFile(conf, []byte(guardConfig("127.0.0.1:0", upstream, dir, extraConfig)), 0o644); err != nil {
		return nil, err
	}
	ready := filepath.Join(dir, "ready")
	g := &guardRun{cmd: exec.CommandContext(ctx, binary, "run", "--config", conf, "--ready-file", ready),
		logFile: filepath.Join(dir, "stderr"), done: make(chan struct{})}
	stderr, err := os.Create(g.logFile)
	if err != nil {
		return nil, err
	}
	defer stderr.Close()
	g.cmd.Stderr = stderr
	if err := g.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { g.cmd.Wait(); close(g.done) }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(20 * time.Second)
	for {
		if b, err := os.ReadFile(ready); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if a, ok := strings.CutPrefix(l, "listen "); ok {
					g.addr = a
					return g, nil
				}
			}
			g.stop()
			return nil, fmt.Errorf("dnsguard's ready file names no listen address: %q", b)
		}
		select {
		case <-g.done:
			return nil, fmt.Errorf("dnsguard exited before serving:\n%s", g.logs())
		case <-deadline:
			g.stop()
			return nil, fmt.Errorf("dnsguard did not start serving (no ready file):\n%s", g.logs())
		case <-tick.C:
		}
	}
}

func (g *guardRun) stop() {
	g.cmd.Process.Signal(os.Interrupt)
	select {
	case <-g.done:
	case <-time.After(5 * time.Second):
		g.cmd.Process.Kill()
		<-g.done
	}
}
