package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
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
// until it serves: until its --ready-file is there.
func startGuardRun(ctx context.Context, binary, upstream, extraConfig, dir string) (*guardRun, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "dnsguard.conf")
	if err := os.WriteFile(conf, []byte(guardConfig(addr, upstream, dir, extraConfig)), 0o644); err != nil {
		return nil, err
	}
	ready := filepath.Join(dir, "ready")
	g := &guardRun{cmd: exec.CommandContext(ctx, binary, "run", "--config", conf, "--ready-file", ready),
		addr: addr, logFile: filepath.Join(dir, "stderr"), done: make(chan struct{})}
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
		if _, err := os.Stat(ready); err == nil {
			return g, nil
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

func freeAddr() (string, error) {
	for i := 0; i < 50; i++ {
		u, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		a := u.LocalAddr().String()
		l, err := net.Listen("tcp", a)
		u.Close()
		if err == nil {
			l.Close()
			return a, nil
		}
	}
	return "", errors.New("no free port")
}
