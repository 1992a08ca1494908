// Package validate is the answer shield: it checks every upstream answer
// before it is cached or passed to a device, and returns a cleaned copy or
// the reason for refusing it. It is pure (no sockets, no clocks, no shared
// state), so the upstream pool and the cache can call it on any goroutine.
//
// A refusal is a *stage.Error: SERVFAIL with an Extended DNS Error
// (RFC 8914) saying why:
//
//   - Forged Answer (4): the answer is not an answer to the question asked:
//     a different question, records of a type the question did not ask for
//     (AAAA in an answer to A), records for names outside the CNAME chain,
//     two CNAMEs for one name, a CNAME beside other data, addresses in an
//     NXDOMAIN.
//   - Blocked (15): an upstream answer giving a special-purpose address
//     (RFC 1918, loopback, link-local, ULA, documentation, ...): DNS
//     rebinding protection, an operator policy. Only answers from the
//     router's own local server are exempt (Trusted), whatever the name.
//   - Invalid Data (24): an answer too large to be plausible: more records
//     than the caps, a CNAME chain that is too long or loops, more than one
//     OPT record.
//
// Duplicated records are not a refusal: they are removed (the study's
// "RR amplification"), as are additional and authority records unrelated
// to the answer (RFC 5452 §6).
package validate

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/dnsguard/dnsguard/guard/dnswire"
	"github.com/dnsguard/dnsguard/guard/stage"
	"github.com/dnsguard/dnsguard/policy"
	"github.com/miekg/dns"
)

// Validator checks upstream answers against the policy's answer shield.
// It holds only configuration; a nil-free Validator is safe for concurrent
// use.
type Validator struct {
	maxRecords int
	maxRRset   int
	maxSize    int
	maxChain   int
	rebind     bool
	allowed    []netip.Prefix
}

// New returns a validator for the policy's answer limits. A zero limit
// means no limit of that kind.
func New(a policy.Answers) *Validator {
	v := &Validator{
		maxRecords: a.MaxRecords,
		maxRRset:   a.MaxRRset,
		maxSize:    a.MaxSize,
		maxChain:   a.MaxCNAMEChain,
		rebind:     a.RebindProtect,
		allowed:    append([]netip.Prefix(nil), a.AllowedPrivate...),
	}
	return v
}

// Trusted returns a validator for answers from the router's own local
// server (dnsmasq, config local): every check but rebinding protection,
// since private addresses for LAN names are what that server is for.
// Rebinding protection depends on where an answer came from, never on
// the name asked: a public upstream's private address for a LAN name is
// still refused by v.
func (v *Validator) Trusted() *Validator {
	t := *v
	t.rebind = false
	return &t
}

// Report says what cleaning removed from an accepted answer.
type Report struct {
	Duplicates int // identical records removed
	Stripped   int // authority/additional records removed as unrelated, private or (strict) unneeded
}

// Errors a refusal wraps, for errors.Is.
var (
	ErrQuestion  = errors.New("validate: question mismatch")
	ErrType      = errors.New("validate: record type inconsistent with the question")
	ErrOwner     = errors.New("validate: record outside the answer chain")
	ErrChain     = errors.New("validate: bad CNAME chain")
	ErrRebinding = errors.New("validate: special-purpose address from an upstream")
	ErrSize      = errors.New("validate: answer over the limits")
	ErrMalformed = errors.New("validate: malformed answer")
)

// Check validates m, the upstream's answer to q. strict (the minimal
// shield of a device held to strict terms, policy.Terms.MinimalShield)
// also removes everything but the answer a stub needs: the additional
// section, and the authority section of a positive answer. It never
// modifies m. The message it returns is m itself when cleaning changed
// nothing, else m's header copied with the sections cleaned: a section
// or record it does not change is m's own (shared, not copied), so
// neither message's records may be modified while the other is in use.
func (v *Validator) Check(q dns.Question, m *dns.Msg, strict bool) (*dns.Msg, error) {
	out, _, err := v.CheckReport(q, m, strict)
	return out, err
}

// CheckReport is Check, also reporting what was removed.
func (v *Validator) CheckReport(q dns.Question, m *dns.Msg, strict bool) (*dns.Msg, Report, error) {
	var rep Report
	var nm names // each name's canonical form once a check
	qname := nm.canon(q.Name)
	if err := v.header(&nm, q, qname, m); err != nil {
		return nil, rep, err
	}
	if v.maxSize > 0 {
		// The length without compression bounds the compressed one and
		// costs no compression map: the exact length only when it could
		// be over.
		c := *m
		c.Compress = false
		if c.Len() > v.maxSize {
			c.Compress = true
			if n := c.Len(); n > v.maxSize {
				return nil, rep, invalid(fmt.Sprintf("answer of %d octets over %d", n, v.maxSize), ErrSize)
			}
		}
	}
	opts := 0
	for _, rr := range m.Extra {
		if rr.Header().Rrtype == dns.TypeOPT {
			opts++
		}
	}
	if opts > 1 { // RFC 6891 §6.1.1: FORMERR territory
		return nil, rep, invalid(fmt.Sprintf("%d OPT records", opts), ErrMalformed)
	}
	// The header copied (on the stack: to the heap only if cleaning
	// changed a section); the sections are m's until cleaning changes
	// them (then new slices, and copies of the records changed).
	var msg dns.Msg
	msg = *m
	out := &msg
	var n int
	out.Answer, n = dedup(out.Answer)
	rep.Duplicates += n
	out.Ns, n = dedup(out.Ns)
	rep.Duplicates += n
	out.Extra, n = dedup(out.Extra)
	rep.Duplicates += n
	if err := v.counts(&nm, out); err != nil {
		return nil, rep, err
	}
	var room [4]string
	chain, err := v.answer(&nm, q, qname, out, room[:0])
	if err != nil {
		return nil, rep, err
	}
	rep.Stripped += v.authority(&nm, out, chain, strict)
	rep.Stripped += v.additional(&nm, q, out, chain, strict)
	normaliseTTLs(&nm, out)
	if same(out.Answer, m.Answer) && same(out.Ns, m.Ns) && same(out.Extra, m.Extra) {
		return m, rep, nil
	}
	c := new(dns.Msg)
	*c = msg
	return c, rep, nil
}

// same reports whether a and b are the same records in the same slice
// (what cleaning left as it was).
func same(a, b []dns.RR) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

func forged(text string, err error) *stage.Error {
	return stage.Fail(dnswire.EDEForgedAnswer, "forged answer: "+text, err)
}

func invalid(text string, err error) *stage.Error {
	return stage.Fail(dnswire.EDEInvalidData, "invalid answer: "+text, err)
}

// header checks m's header and question against q (qname: canon(q.Name)).
func (v *Validator) header(nm *names, q dns.Question, qname string, m *dns.Msg) error {
	switch {
	case m == nil:
		return invalid("no message", ErrMalformed)
	case !m.Response:
		return forged("QR bit clear", ErrQuestion)
	case m.Opcode != dns.OpcodeQuery:
		return forged(fmt.Sprintf("opcode %s", dns.OpcodeToString[m.Opcode]), ErrQuestion)
	case len(m.Question) != 1:
		return forged(fmt.Sprintf("%d questions", len(m.Question)), ErrQuestion)
	}
	a := m.Question[0]
	if a.Name != q.Name && nm.canon(a.Name) != qname || a.Qtype != q.Qtype || a.Qclass != q.Qclass {
		return forged(fmt.Sprintf("answer to %s %s, asked %s %s", a.Name, dns.Type(a.Qtype), q.Name, dns.Type(q.Qtype)), ErrQuestion)
	}
	return nil
}

// dedup removes records identical (owner, class, type, data; not TTL)
// to an earlier one. rrs is not modified: with duplicates the records
// kept are in a new slice, without any rrs itself is returned.
func dedup(rrs []dns.RR) ([]dns.RR, int) {
	if len(rrs) < 2 || distinct(rrs) {
		return rrs, 0
	}
	seen := make(map[string]bool, len(rrs))
	out := make([]dns.RR, 0, len(rrs))
	for _, rr := range rrs {
		k := key(rr)
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, rr)
	}
	return out, len(rrs) - len(out)
}

// distinct reports, without computing keys, that no two of rrs can
// have the same key: every two differ in type or class, or are
// addresses (A, AAAA) that differ. A false answer only means the keys
// must be compared.
func distinct(rrs []dns.RR) bool {
	if len(rrs) > 32 {
		return false
	}
	for i, a := range rrs {
		ha := a.Header()
		for _, b := range rrs[i+1:] {
			hb := b.Header()
			if ha.Rrtype != hb.Rrtype || ha.Class != hb.Class && ha.Rrtype != dns.TypeOPT {
				continue // (every OPT has the one key, whatever its class: the UDP size)
			}
			switch x := a.(type) {
			case *dns.A:
				if y, ok := b.(*dns.A); ok && !x.A.Equal(y.A) {
					continue
				}
			case *dns.AAAA:
				if y, ok := b.(*dns.AAAA); ok && !x.AAAA.Equal(y.AAAA) {
					continue
				}
			}
			return false
		}
	}
	return true
}

// key identifies a record without its TTL: the owner compared on the
// wire, the data without case.
func key(rr dns.RR) string {
	if rr.Header().Rrtype == dns.TypeOPT {
		return "OPT"
	}
	c := dns.Copy(rr)
	h := c.Header()
	owner := canon(h.Name)
	h.Name, h.Ttl, h.Rdlength = ".", 0, 0
	return owner + strings.ToLower(c.String())
}

// canon is the form in which the shield compares names: wire octets,
// ASCII lower-cased (dnswire.CanonicalName), so that every presentation
// form of a name (a\032b, a\ b; a(b, a\(b) is the same name and a dot
// inside a label is not a label boundary. A name that does not pack
// (never one miekg/dns unpacked) gets a form no wire name has.
func canon(name string) string {
	c, err := dnswire.CanonicalName(name)
	if err != nil {
		return "\xff" + strings.ToLower(name)
	}
	return c
}

// names remembers the canonical forms of the names one check computed
// (canon), so that a name met again (an owner in every section's pass,
// the question's) is not packed and copied again.
type names struct {
	n     int
	name  [8]string
	forms [8]string
}

// canon is canon(name), remembered.
func (nm *names) canon(name string) string {
	for i := range nm.n {
		if nm.name[i] == name {
			return nm.forms[i]
		}
	}
	c := canon(name)
	if nm.n < len(nm.name) {
		nm.name[nm.n], nm.forms[nm.n] = name, c
		nm.n++
	}
	return c
}

// isSub reports whether child is parent or below it (canonical names).
func isSub(parent, child string) bool { return dnswire.IsSubName(parent, child) }

type rrsetKey struct {
	name  string
	typ   uint16
	class uint16
}

func (v *Validator) counts(nm *names, m *dns.Msg) error {
	total := 0
	sets := map[rrsetKey]int{}
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			h := rr.Header()
			if h.Rrtype == dns.TypeOPT {
				continue
			}
			total++
			k := rrsetKey{nm.canon(h.Name), h.Rrtype, h.Class}
			sets[k]++
			if v.maxRRset > 0 && sets[k] > v.maxRRset {
				return invalid(fmt.Sprintf("more than %d %s records for %s", v.maxRRset, dns.Type(h.Rrtype), h.Name), ErrSize)
			}
		}
	}
	if v.maxRecords > 0 && total > v.maxRecords {
		return invalid(fmt.Sprintf("%d records, over %d", total, v.maxRecords), ErrSize)
	}
	return nil
}

// answer checks the answer section and returns the chain of names it
// covers: the question name (qname, canonical), then each CNAME target
// in turn, appended to chain.
func (v *Validator) answer(nm *names, q dns.Question, qname string, m *dns.Msg, chain []string) ([]string, error) {
	switch m.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	default: // an error answer carries no data
		if len(m.Answer) > 0 {
			return nil, forged(fmt.Sprintf("%d records with rcode %s", len(m.Answer), dns.RcodeToString[m.Rcode]), ErrType)
		}
		return append(chain, qname), nil
	}
	cname := map[string]string{}
	for _, rr := range m.Answer {
		h := rr.Header()
		if h.Class != q.Qclass {
			return nil, forged(fmt.Sprintf("class %s record for %s", dns.Class(h.Class), h.Name), ErrType)
		}
		c, ok := rr.(*dns.CNAME)
		if !ok || q.Qtype == dns.TypeCNAME {
			continue
		}
		owner, target := nm.canon(h.Name), nm.canon(c.Target)
		if prev, dup := cname[owner]; dup && prev != target {
			return nil, forged("two CNAMEs for "+h.Name, ErrChain)
		}
		cname[owner] = target
	}
	chain = append(chain, qname)
	inChain := map[string]bool{qname: true}
	for cur := qname; ; {
		t, ok := cname[cur]
		if !ok {
			break
		}
		if inChain[t] {
			return nil, invalid("CNAME loop at "+dnswire.NameString([]byte(t)), ErrChain)
		}
		if v.maxChain > 0 && len(chain) > v.maxChain {
			return nil, invalid(fmt.Sprintf("CNAME chain longer than %d", v.maxChain), ErrChain)
		}
		chain = append(chain, t)
		inChain[t] = true
		cur = t
	}
	last := chain[len(chain)-1]
	for _, rr := range m.Answer {
		h := rr.Header()
		owner := nm.canon(h.Name)
		switch {
		case h.Rrtype == dns.TypeDNAME:
			if !ancestorOfChain(owner, chain) {
				return nil, forged("DNAME at "+h.Name+" outside the answer chain", ErrOwner)
			}
			continue
		case !inChain[owner]:
			return nil, forged(fmt.Sprintf("%s record for %s, outside the answer chain of %s", dns.Type(h.Rrtype), h.Name, q.Name), ErrOwner)
		case h.Rrtype == dns.TypeRRSIG:
			continue
		case h.Rrtype == dns.TypeCNAME && q.Qtype != dns.TypeCNAME:
			continue // placed in the chain above
		}
		if h.Rrtype != q.Qtype && q.Qtype != dns.TypeANY {
			return nil, forged(fmt.Sprintf("%s in answer to %s", dns.Type(h.Rrtype), dns.Type(q.Qtype)), ErrType)
		}
		if owner != last {
			return nil, forged(fmt.Sprintf("CNAME and %s data both at %s", dns.Type(h.Rrtype), h.Name), ErrChain)
		}
		if m.Rcode == dns.RcodeNameError {
			return nil, forged(fmt.Sprintf("%s data in an NXDOMAIN answer", dns.Type(h.Rrtype)), ErrType)
		}
	}
	if err := v.rebinding(q, m.Answer); err != nil {
		return nil, err
	}
	return chain, nil
}

func ancestorOfChain(owner string, chain []string) bool {
	for _, n := range chain {
		if n != owner && isSub(owner, n) {
			return true
		}
	}
	return false
}

// blocked says why an upstream may not give addr ("" if it may).
func (v *Validator) blocked(addr netip.Addr) string {
	r, special := Special(addr)
	if !special {
		return ""
	}
	for _, p := range v.allowed {
		if p.Contains(addr.Unmap()) || p.Contains(addr) {
			return ""
		}
	}
	return fmt.Sprintf("%s is %s (%s)", addr, r.Name, r.Source)
}

func (v *Validator) rebinding(q dns.Question, rrs []dns.RR) error {
	if !v.rebind {
		return nil
	}
	for _, rr := range rrs {
		if a, ok := address(rr); ok {
			if why := v.blocked(a); why != "" {
				return stage.Fail(dnswire.EDEBlocked, "rebinding: "+why+" from an upstream for "+q.Name, ErrRebinding)
			}
		}
		// SVCB/HTTPS address hints (RFC 9460 §7.3) are where a client
		// may connect before, or instead of, asking for A/AAAA.
		for _, a := range hints(rr) {
			if why := v.blocked(a); why != "" {
				return stage.Fail(dnswire.EDEBlocked, "rebinding: "+dns.Type(rr.Header().Rrtype).String()+" hint "+why+" from an upstream for "+q.Name, ErrRebinding)
			}
		}
	}
	return nil
}

// hints returns the ipv4hint and ipv6hint addresses of an SVCB or HTTPS
// record.
func hints(rr dns.RR) []netip.Addr {
	var kv []dns.SVCBKeyValue
	switch r := rr.(type) {
	case *dns.SVCB:
		kv = r.Value
	case *dns.HTTPS:
		kv = r.Value
	default:
		return nil
	}
	var out []netip.Addr
	for _, p := range kv {
		var ips []net.IP
		switch h := p.(type) {
		case *dns.SVCBIPv4Hint:
			ips = h.Hint
		case *dns.SVCBIPv6Hint:
			ips = h.Hint
		}
		for _, ip := range ips {
			a, ok := netip.AddrFromSlice(ip)
			if !ok {
				continue
			}
			if p.Key() == dns.SVCB_IPV4HINT {
				a = a.Unmap()
			}
			out = append(out, a)
		}
	}
	return out
}

func address(rr dns.RR) (netip.Addr, bool) {
	var ip net.IP
	switch r := rr.(type) {
	case *dns.A:
		ip = r.A
	case *dns.AAAA:
		ip = r.AAAA
	default:
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(ip)
	if ok && rr.Header().Rrtype == dns.TypeA {
		a = a.Unmap()
	}
	return a, ok
}

// authority keeps the records that say something about the answer's last
// name: SOA, NS and DNSSEC records owned by that name or an ancestor. A
// strict device gets no authority section with a positive answer.
func (v *Validator) authority(nm *names, m *dns.Msg, chain []string, strict bool) int {
	last := chain[len(chain)-1]
	before := len(m.Ns)
	if strict && len(m.Answer) > 0 {
		m.Ns = nil
		return before
	}
	// The zones the answer's last name sits in, as the kept SOA and NS
	// records say.
	var apexes []string
	for _, rr := range m.Ns {
		h := rr.Header()
		if (h.Rrtype == dns.TypeSOA || h.Rrtype == dns.TypeNS) && h.Class == m.Question[0].Qclass && isSub(nm.canon(h.Name), last) {
			apexes = append(apexes, nm.canon(h.Name))
		}
	}
	// A positive answer's proof (a wildcard expansion's NSEC/NSEC3) sits
	// in the zone that signed the answer's last RRset.
	for _, rr := range m.Answer {
		if sig, ok := rr.(*dns.RRSIG); ok && nm.canon(sig.Hdr.Name) == last && isSub(nm.canon(sig.SignerName), last) {
			apexes = append(apexes, nm.canon(sig.SignerName))
		}
	}
	kept := filter(m.Ns, func(rr dns.RR) bool {
		h := rr.Header()
		if h.Class != m.Question[0].Qclass {
			return false
		}
		owner := nm.canon(h.Name)
		switch h.Rrtype {
		case dns.TypeSOA, dns.TypeNS, dns.TypeDS:
			return isSub(owner, last)
		case dns.TypeRRSIG, dns.TypeNSEC, dns.TypeNSEC3:
			// Denial-of-existence proofs are owned by neighbours in the
			// zone: keep them when they are in the answer's zone.
			for _, apex := range apexes {
				if isSub(apex, owner) {
					return true
				}
			}
		}
		return false
	})
	m.Ns = kept
	return before - len(kept)
}

// filter returns the records of rrs that keep says to keep: rrs itself
// when that is all of them, else a new slice (rrs is not modified).
func filter(rrs []dns.RR, keep func(dns.RR) bool) []dns.RR {
	for i, rr := range rrs {
		if keep(rr) {
			continue
		}
		kept := make([]dns.RR, i, len(rrs)-1)
		copy(kept, rrs[:i])
		for _, rr := range rrs[i+1:] {
			if keep(rr) {
				kept = append(kept, rr)
			}
		}
		return kept
	}
	return rrs
}

// additional keeps the OPT record and address records for names the
// answer or authority refers to (chain names, NS/MX/SRV/SVCB targets),
// dropping special-purpose addresses for public names. A strict device
// gets only the OPT.
func (v *Validator) additional(nm *names, q dns.Question, m *dns.Msg, chain []string, strict bool) int {
	wanted := map[string]bool{}
	for _, n := range chain {
		wanted[n] = true
	}
	for _, sec := range [][]dns.RR{m.Answer, m.Ns} {
		for _, rr := range sec {
			if t := target(rr); t != "" {
				wanted[nm.canon(t)] = true
			}
		}
	}
	before := len(m.Extra)
	kept := filter(m.Extra, func(rr dns.RR) bool {
		h := rr.Header()
		if h.Rrtype == dns.TypeOPT {
			return true
		}
		if strict || !wanted[nm.canon(h.Name)] || h.Class != q.Qclass {
			return false
		}
		a, ok := address(rr)
		if !ok {
			return false
		}
		return !v.rebind || v.blocked(a) == ""
	})
	m.Extra = kept
	return before - len(kept)
}

func target(rr dns.RR) string {
	switch r := rr.(type) {
	case *dns.NS:
		return r.Ns
	case *dns.MX:
		return r.Mx
	case *dns.SRV:
		return r.Target
	case *dns.SVCB:
		return r.Target
	case *dns.HTTPS:
		return r.Target
	}
	return ""
}

// normaliseTTLs gives every record of an RRset the set's smallest TTL
// (RFC 2181 §5.2) and reads TTLs with the top bit set as 0 (RFC 2181 §8).
// A record whose TTL changes is copied first, into a new slice for its
// section: the records m shares with the upstream's message are not
// modified.
func normaliseTTLs(nm *names, m *dns.Msg) {
	for _, sec := range []*[]dns.RR{&m.Answer, &m.Ns, &m.Extra} {
		if !ttlsChange(*sec) {
			continue
		}
		low := map[rrsetKey]uint32{}
		for _, rr := range *sec {
			h := rr.Header()
			if h.Rrtype == dns.TypeOPT {
				continue
			}
			k := rrsetKey{nm.canon(h.Name), h.Rrtype, h.Class}
			if t, ok := low[k]; !ok || ttl(h) < t {
				low[k] = ttl(h)
			}
		}
		out := slices.Clone(*sec)
		for i, rr := range out {
			h := rr.Header()
			if h.Rrtype == dns.TypeOPT {
				continue
			}
			if t := low[rrsetKey{nm.canon(h.Name), h.Rrtype, h.Class}]; t != h.Ttl {
				out[i] = dns.Copy(rr)
				out[i].Header().Ttl = t
			}
		}
		*sec = out
	}
}

// ttl is h's TTL as RFC 2181 §8 reads it: with the top bit set, 0.
func ttl(h *dns.RR_Header) uint32 {
	if h.Ttl > 1<<31-1 {
		return 0
	}
	return h.Ttl
}

// ttlsChange reports whether normaliseTTLs changes a TTL in rrs: a TTL
// with the top bit set, or two records of a type and class (the owners
// are not compared: a false yes only costs the exact pass) with TTLs
// that differ.
func ttlsChange(rrs []dns.RR) bool {
	for i, a := range rrs {
		ha := a.Header()
		if ha.Rrtype == dns.TypeOPT {
			continue
		}
		if ha.Ttl > 1<<31-1 {
			return true
		}
		for _, b := range rrs[i+1:] {
			if hb := b.Header(); hb.Rrtype == ha.Rrtype && hb.Class == ha.Class && hb.Ttl != ha.Ttl {
				return true
			}
		}
	}
	return false
}
