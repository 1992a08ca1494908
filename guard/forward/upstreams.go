package forward

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/dnsguard/dnsguard/guard/dnssec"
	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/guard/upstream"
	"github.com/dnsguard/dnsguard/guard/validate"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

// Upstreams is the Exchanger of a running guard: the upstream pool, the
// DNSSEC validator and the answer shield, applied under each query's
// terms (policy.Terms): a strict device's questions go to cleartext
// upstreams with 0x20 and its answers through the minimal shield.
type Upstreams struct {
	Pool *upstream.Pool
	// Shield is the configuration's answer shield; Check runs it (and
	// whatever else the configuration watches, its TTL anomalies) on
	// every upstream answer.
	Shield *validate.Validator
	Check  upstream.CheckFunc
	// DNSSEC validates answers before the shield; nil: validation off.
	DNSSEC *dnssec.Validator
	// Bogus logs DNSSEC refusals at a bounded rate (nil: not logged).
	Bogus *BogusLog
}

// Exchange resolves q under terms t.
func (u *Upstreams) Exchange(ctx context.Context, q *dns.Msg, t policy.Terms) (*dns.Msg, error) {
	if u.DNSSEC != nil && !q.CheckingDisabled {
		q = withDO(q)
	}
	o := upstream.QueryOptions{Check: u} // CheckAnswer
	if t.Case0x20() {
		o.Case0x20 = upstream.Case0x20On
	}
	resp, err := u.Pool.Exchange(ctx, q, o)
	if err != nil || !t.MinimalShield() {
		return resp, err
	}
	return u.Shield.Check(q.Question[0], resp, true)
}

// CheckAnswer is the pool's check of every upstream answer (an
// upstream.Checker): DNSSEC first, on the answer as it came (the shield
// may trim the authority section a wildcard's proof sits in), then the
// shield.
func (u *Upstreams) CheckAnswer(ctx context.Context, q, resp *dns.Msg) (*dns.Msg, error) {
	resp, err := Verdict(ctx, u.DNSSEC, q, resp)
	if err != nil {
		u.Bogus.Note(q, err)
		return nil, err
	}
	return u.Check(q, resp)
}

// BogusTTL is how long a bogus verdict is cached (unbound's val-bogus-ttl).
const BogusTTL = 60 * time.Second

// ErrBogus is in the chain of every DNSSEC refusal.
var ErrBogus = errors.New("dnssec: bogus")

// bogusError is a refusal of bogus data: SERVFAIL with the verdict's EDE,
// cached for BogusTTL (guard/cache's Held).
type bogusError struct{ err *stage.Error }

func (e bogusError) Error() string          { return e.err.Error() }
func (e bogusError) Unwrap() error          { return e.err }
func (e bogusError) HoldFor() time.Duration { return BogusTTL }

// Verdict validates resp (the upstream's answer to q) with sec: AD set on
// secure data and cleared on anything else; bogus data is an error. With
// sec nil or CD=1 the answer passes unvalidated, AD cleared: AD comes only
// from the guard's own validation.
func Verdict(ctx context.Context, sec *dnssec.Validator, q, resp *dns.Msg) (*dns.Msg, error) {
	if sec == nil || q.CheckingDisabled {
		resp.AuthenticatedData = false
		return resp, nil
	}
	res := sec.Validate(ctx, resp)
	switch res.Security {
	case dnssec.Secure:
		resp.AuthenticatedData = true
		if res.Capped {
			// RFC 4035 §5.3.3: no longer than the signatures allow.
			for _, sec := range [][]dns.RR{resp.Answer, resp.Ns} {
				for _, rr := range sec {
					if h := rr.Header(); h.Ttl > res.TTLCap {
						h.Ttl = res.TTLCap
					}
				}
			}
		}
		return resp, nil
	case dnssec.Insecure:
		resp.AuthenticatedData = false
		return resp, nil
	case dnssec.Bogus:
		code := res.EDE
		if code == 0 {
			code = dns.ExtendedErrorCodeDNSBogus
		}
		return nil, bogusError{err: stage.Fail(code, dnswire.EDEText("DNSSEC bogus: "+res.Reason), ErrBogus)}
	default:
		return nil, stage.Fail(dns.ExtendedErrorCodeDNSSECIndeterminate, dnswire.EDEText("DNSSEC indeterminate: "+res.Reason), ErrBogus)
	}
}

// withDO returns q asking for DNSSEC records (DO=1), copied if needed.
func withDO(q *dns.Msg) *dns.Msg {
	if opt := q.IsEdns0(); opt != nil && opt.Do() {
		return q
	}
	c := q.Copy()
	if opt := c.IsEdns0(); opt != nil {
		opt.SetDo()
	} else {
		c.SetEdns0(dnswire.OurEDNSSize, true)
	}
	return c
}

// BogusLog logs DNSSEC refusals, at most one a second (a forger, or a
// broken zone a device keeps asking for, must not flood the log); the
// ones left out are counted in the next line.
type BogusLog struct {
	log     *slog.Logger
	last    atomic.Int64 // Unix nanoseconds of the last line
	skipped atomic.Int64
}

// NewBogusLog returns a BogusLog writing to log.
func NewBogusLog(log *slog.Logger) *BogusLog { return &BogusLog{log: log} }

// Note logs the refusal err of an answer to q, unless one was logged
// less than a second ago.
func (b *BogusLog) Note(q *dns.Msg, err error) {
	if b == nil || len(q.Question) != 1 {
		return
	}
	now := time.Now().UnixNano()
	last := b.last.Load()
	if now-last < int64(time.Second) || !b.last.CompareAndSwap(last, now) {
		b.skipped.Add(1)
		return
	}
	b.log.Info("dnssec: answer refused", "name", q.Question[0].Name, "type", dns.TypeToString[q.Question[0].Qtype],
		"reason", err.Error(), "not_logged_before", b.skipped.Swap(0))
}
