// Package stage defines how the guard's stages plug together. A query
// flows inward through a chain of Stages (count -> identify -> static ->
// protocol -> limit -> cache -> local -> forward, built by Chain from one
// list in cmd/dnsguard), each of which either answers or calls the next,
// the way net/http middleware wraps a handler.
package stage

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

// Request is one device query and what is known about it.
type Request struct {
	Raw      []byte // the device's message; valid only during ServeDNS
	Q        dnswire.Query
	Client   netip.AddrPort // the device's address and source port
	Local    netip.AddrPort // the listener that took it
	OrigDst  netip.AddrPort // where the device meant to send it, when intercepted (zero if unknown)
	TCP      bool
	Received time.Time
	Device   *Device // filled by the identify stage; nil before it
	// Terms are the device's terms (policy.Terms: what "strict" means),
	// set by the identify stage; Lenient before it or without one.
	Terms policy.Terms
	// Reply is room a stage may answer in (the cache's hits) instead of
	// allocating a reply; valid until the answer is written, like Raw.
	Reply dnswire.Reply
}

// waitKey holds the func a listener wants called before its goroutine
// waits on the network.
type waitKey struct{}

// WithWaiter returns ctx with f, which Waiting calls. A listener that
// reads queries in batches uses it to send the answers it has ready and
// hand the rest of its batch on, so that cache hits are not held behind
// a miss. f runs on the goroutine that called Waiting.
func WithWaiter(ctx context.Context, f func()) context.Context {
	return context.WithValue(ctx, waitKey{}, f)
}

// WithoutWaiter returns ctx without the func WithWaiter put in, for work
// that runs on another goroutine than the listener's (a shared flight).
func WithoutWaiter(ctx context.Context) context.Context {
	if f, _ := ctx.Value(waitKey{}).(func()); f == nil {
		return ctx
	}
	return context.WithValue(ctx, waitKey{}, nil)
}

// Waiting tells the listener that the query of ctx is about to wait on
// the network (an upstream, another device's identical query). It must be
// called on the goroutine ServeDNS was called on.
func Waiting(ctx context.Context) {
	if f, _ := ctx.Value(waitKey{}).(func()); f != nil {
		f()
	}
}

// Device is the identity and policy of the device that sent a query.
type Device struct {
	ID     string // MAC address, or "ip:ADDR" when the MAC is unknown
	MAC    string
	Name   string
	Class  string
	Strict bool    // held to strict terms: the identify stage sets Request.Terms from it
	Rate   float64 // queries per second allowed; 0 = the global default
	Burst  int
}

// Handler answers a query or passes it inward. It returns a stored-form
// reply; an error becomes SERVFAIL, with the Extended DNS Error it
// carries (see Error).
type Handler interface {
	ServeDNS(ctx context.Context, req *Request) (*dnswire.Reply, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *Request) (*dnswire.Reply, error)

// ServeDNS calls f.
func (f HandlerFunc) ServeDNS(ctx context.Context, req *Request) (*dnswire.Reply, error) {
	return f(ctx, req)
}

// Stage is one step of the chain. Wrap puts it in front of next, the
// stages further in, and returns the handler that answers a query or
// passes it on to next; Wrap is called once, when the chain is built, so
// whatever a query needs is made there and not per query. Name is the
// stage's short name in logs and counters ("cache", "limit"), as a
// CoreDNS plugin's Name is.
//
// Every stage is a value its package makes with New (NewX in a package
// with more than one), configured there, and put in the chain by
// Chain; the order of a running guard's stages is written in one list,
// in cmd/dnsguard (buildGuard).
type Stage interface {
	Name() string
	Wrap(next Handler) Handler
}

// Chain builds the stages into one handler, the first outermost, the way
// net/http middleware wraps a handler: a query reaches stages[i+1] only
// if stages[i] passes it on. The innermost stage answers every query it
// gets (forward); should it pass one on, the query fails (SERVFAIL, EDE
// Other, naming the stage). Nil entries are skipped: a stage the
// configuration goes without.
func Chain(stages ...Stage) Handler {
	last := "an empty chain"
	for _, s := range stages {
		if s != nil {
			last = s.Name()
		}
	}
	var h Handler = unanswered(last)
	for i := len(stages) - 1; i >= 0; i-- {
		if stages[i] != nil {
			h = stages[i].Wrap(h)
		}
	}
	return h
}

// Names returns the names of the stages Chain builds, in order: the
// chain as a log line shows it.
func Names(stages []Stage) []string {
	out := make([]string, 0, len(stages))
	for _, s := range stages {
		if s != nil {
			out = append(out, s.Name())
		}
	}
	return out
}

// unanswered is what lies past the innermost stage.
func unanswered(after string) Handler {
	err := Fail(dnswire.EDEOther, "no stage answered", fmt.Errorf("query passed on by %s, the innermost stage", after))
	return HandlerFunc(func(context.Context, *Request) (*dnswire.Reply, error) { return nil, err })
}

// Func makes a stage of a name and a wrap function, for a stage with no
// state of its own beyond what wrap closes over.
func Func(name string, wrap func(next Handler) Handler) Stage { return funcStage{name, wrap} }

type funcStage struct {
	name string
	wrap func(next Handler) Handler
}

func (f funcStage) Name() string              { return f.name }
func (f funcStage) Wrap(next Handler) Handler { return f.wrap(next) }

// Answer makes an innermost stage of h: it answers every query and passes
// none on (a test's stand-in for the upstream side).
func Answer(name string, h Handler) Stage {
	return funcStage{name, func(Handler) Handler { return h }}
}

// Error is a failure with the rcode and Extended DNS Error the device
// should see.
type Error struct {
	Rcode int
	EDE   dnswire.EDE
	Err   error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.EDE.Text
	}
	return fmt.Sprintf("%s: %v", e.EDE.Text, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Fail returns an Error with SERVFAIL and the given EDE.
func Fail(code uint16, text string, err error) *Error {
	return &Error{Rcode: dns.RcodeServerFailure, EDE: dnswire.EDE{Code: code, Text: text}, Err: err}
}

// ErrorReply turns any error into the reply a device gets: the rcode and
// EDE of an *Error in its chain, or SERVFAIL with EDE "Other".
func ErrorReply(req *Request, err error) *dnswire.Reply {
	var e *Error
	if !errors.As(err, &e) {
		e = Fail(dnswire.EDEOther, "internal error", err)
	}
	r, rerr := Synth(req, e.Rcode, nil, nil)
	if rerr != nil {
		r = &dnswire.Reply{Msg: dnswire.AppendError(nil, req.Raw, &req.Q, dns.RcodeServerFailure)}
	}
	ede := e.EDE
	ede.Text = dnswire.EDEText(ede.Text) // what a device is sent: printable, bounded
	r.EDE = &ede
	return r
}

// Synth builds a reply for req's question with the given rcode and records.
// It is for answers the guard makes itself (errors, local names), not for
// the hot path.
func Synth(req *Request, rcode int, answer, authority []dns.RR) (*dnswire.Reply, error) {
	m := new(dns.Msg)
	m.Response = true
	m.Opcode = int(req.Q.Opcode)
	m.Rcode = rcode
	m.RecursionAvailable = true
	m.Question = []dns.Question{{Name: dnswire.NameString(req.Q.Name), Qtype: req.Q.Type, Qclass: req.Q.Class}}
	m.Answer, m.Ns = answer, authority
	r, err := dnswire.FromMsg(m)
	if err != nil {
		return nil, fmt.Errorf("synthesize %s: %w", req.Q.String(), err)
	}
	return r, nil
}
