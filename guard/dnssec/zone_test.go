package dnssec

// A small signed DNS world for the tests: zones signed with miekg/dns
// (real keys, real RRSIG/NSEC/NSEC3), answered the way a recursive
// resolver with DO=1 answers (DS from the parent, CNAMEs followed,
// wildcards expanded with their proofs, NSEC/NSEC3 denials).

import (
	"context"
	"crypto"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

var testNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

type tzone struct {
	origin   string
	alg      uint8
	bits     int
	unsigned bool
	nsec3    bool
	iter     uint16
	salt     string
	optOut   bool
	digest   uint8 // of the DS in the parent (default SHA-256)
	incept   time.Time
	expire   time.Time
	records  []string // zone content (no SOA/DNSKEY needed)

	ksk, zsk   *dns.DNSKEY
	kpriv      crypto.Signer
	zpriv      crypto.Signer
	moreKSK    []*dns.DNSKEY       // more keys in the DNSKEY RRset, signing it too
	morePriv   []crypto.Signer     // their private keys
	publish    []*dns.DNSKEY       // keys in the DNSKEY RRset that do not sign it
	extra      []dns.RR            // the children's NS and DS, for re-signing
	data       map[string][]dns.RR // owner -> records incl. RRSIG/NSEC
	names      []string            // authoritative names, canonical order
	exists     map[string]bool     // names incl. empty non-terminals
	nsec3Chain []*dns.NSEC3        // sorted by owner hash
}

type world struct {
	t      testing.TB
	zones  map[string]*tzone
	tamper func(q, resp *dns.Msg)
	mu     sync.Mutex
	asked  []string
}

func mustRR(t testing.TB, s string) dns.RR {
	t.Helper()
	rr, err := dns.NewRR(s)
	if err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	return rr
}

func (z *tzone) keys(t testing.TB) {
	if z.alg == 0 {
		z.alg = dns.ECDSAP256SHA256
	}
	if z.bits == 0 {
		switch z.alg {
		case dns.RSASHA256, dns.RSASHA512, dns.RSASHA1:
			z.bits = 1024
		case dns.ECDSAP384SHA384:
			z.bits = 384
		default:
			z.bits = 256
		}
	}
	gen := func(flags uint16) (*dns.DNSKEY, crypto.Signer) {
		k := &dns.DNSKEY{Hdr: dns.RR_Header{Name: z.origin, Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET, Ttl: 3600}, Flags: flags, Protocol: 3, Algorithm: z.alg}
		p, err := k.Generate(z.bits)
		if err != nil {
			t.Fatal(err)
		}
		return k, p.(crypto.Signer)
	}
	z.ksk, z.kpriv = gen(257)
	z.zsk, z.zpriv = gen(256)
}

func (z *tzone) sign(t testing.TB, extra []dns.RR) {
	if z.incept.IsZero() {
		z.incept = testNow.Add(-time.Hour)
	}
	if z.expire.IsZero() {
		z.expire = testNow.Add(30 * 24 * time.Hour)
	}
	z.data = map[string][]dns.RR{}
	z.exists = map[string]bool{}
	add := func(rr dns.RR) {
		n := canon(rr.Header().Name)
		rr.Header().Name = n
		z.data[n] = append(z.data[n], rr)
	}
	ns := "ns." + strings.TrimPrefix(z.origin, ".")
	add(mustRR(t, z.origin+" 3600 IN SOA "+ns+" host.invalid. 1 3600 600 86400 300"))
	add(mustRR(t, z.origin+" 3600 IN NS "+ns))
	for _, s := range z.records {
		add(mustRR(t, s))
	}
	for _, rr := range extra {
		add(rr)
	}
	if z.unsigned {
		for n := range z.data {
			z.exists[n] = true
		}
		return
	}
	add(dns.Copy(z.ksk))
	add(dns.Copy(z.zsk))
	for _, k := range append(append([]*dns.DNSKEY{}, z.moreKSK...), z.publish...) {
		add(dns.Copy(k))
	}
	cut := func(n string) bool {
		return n != z.origin && hasTypeRR(z.data[n], dns.TypeNS)
	}
	for n := range z.data {
		z.names = append(z.names, n)
		for a := n; a != z.origin && dns.IsSubDomain(z.origin, a); a = parent(a) {
			z.exists[a] = true
		}
	}
	z.exists[z.origin] = true
	sort.Slice(z.names, func(i, j int) bool { return compareNames(z.names[i], z.names[j]) < 0 })
	types := func(n string) []uint16 {
		seen := map[uint16]bool{}
		var out []uint16
		for _, rr := range z.data[n] {
			if t := rr.Header().Rrtype; !seen[t] {
				seen[t] = true
				out = append(out, t)
			}
		}
		return out
	}
	signed := func(n string) bool { return !cut(n) || hasTypeRR(z.data[n], dns.TypeDS) }
	if !z.nsec3 {
		for i, n := range z.names {
			next := z.names[(i+1)%len(z.names)]
			bm := append(types(n), dns.TypeNSEC, dns.TypeRRSIG)
			sort.Slice(bm, func(i, j int) bool { return bm[i] < bm[j] })
			add(&dns.NSEC{Hdr: dns.RR_Header{Name: n, Rrtype: dns.TypeNSEC, Class: dns.ClassINET, Ttl: 300}, NextDomain: next, TypeBitMap: bm})
		}
	} else {
		type h struct {
			hash string
			name string
		}
		var hs []h
		for n := range z.exists {
			if z.optOut && cut(n) && !hasTypeRR(z.data[n], dns.TypeDS) {
				continue
			}
			hs = append(hs, h{dns.HashName(n, dns.SHA1, z.iter, z.salt), n})
		}
		sort.Slice(hs, func(i, j int) bool { return hs[i].hash < hs[j].hash })
		for i, x := range hs {
			bm := types(x.name)
			if len(bm) > 0 && signed(x.name) || x.name == z.origin {
				bm = append(bm, dns.TypeRRSIG)
			}
			if x.name == z.origin {
				bm = append(bm, dns.TypeNSEC3PARAM)
			}
			sort.Slice(bm, func(i, j int) bool { return bm[i] < bm[j] })
			flags := uint8(0)
			if z.optOut {
				flags = 1
			}
			rr := &dns.NSEC3{Hdr: dns.RR_Header{Name: strings.ToLower(x.hash) + "." + z.origin, Rrtype: dns.TypeNSEC3, Class: dns.ClassINET, Ttl: 300},
				Hash: dns.SHA1, Flags: flags, Iterations: z.iter, Salt: z.salt, SaltLength: uint8(len(z.salt) / 2),
				NextDomain: hs[(i+1)%len(hs)].hash, HashLength: 20, TypeBitMap: bm}
			if z.salt == "" {
				rr.Salt = ""
			}
			add(rr)
			z.nsec3Chain = append(z.nsec3Chain, rr)
		}
		add(&dns.NSEC3PARAM{Hdr: dns.RR_Header{Name: z.origin, Rrtype: dns.TypeNSEC3PARAM, Class: dns.ClassINET, Ttl: 0}, Hash: dns.SHA1, Iterations: z.iter, Salt: z.salt, SaltLength: uint8(len(z.salt) / 2)})
	}
	// Sign every authoritative RRset.
	for n, rrs := range z.data {
		if dns.IsSubDomain(z.origin, n) && n != z.origin && isBelowCut(z, n) {
			continue // glue
		}
		byType := map[uint16][]dns.RR{}
		for _, rr := range rrs {
			byType[rr.Header().Rrtype] = append(byType[rr.Header().Rrtype], rr)
		}
		for typ, set := range byType {
			if cut(n) && typ != dns.TypeDS && typ != dns.TypeNSEC {
				continue
			}
			signers := []*dns.DNSKEY{z.zsk}
			privs := []crypto.Signer{z.zpriv}
			if typ == dns.TypeDNSKEY {
				signers = append([]*dns.DNSKEY{z.ksk}, z.moreKSK...)
				privs = append([]crypto.Signer{z.kpriv}, z.morePriv...)
			}
			for i, k := range signers {
				sig := &dns.RRSIG{Hdr: dns.RR_Header{Ttl: set[0].Header().Ttl}, Algorithm: k.Algorithm, KeyTag: k.KeyTag(), SignerName: z.origin,
					Inception: uint32(z.incept.Unix()), Expiration: uint32(z.expire.Unix())}
				if err := sig.Sign(privs[i], set); err != nil {
					t.Fatalf("sign %s %d: %v", n, typ, err)
				}
				z.data[n] = append(z.data[n], sig)
			}
		}
	}
}

func isBelowCut(z *tzone, n string) bool {
	for a := parent(n); a != z.origin && dns.IsSubDomain(z.origin, a); a = parent(a) {
		if hasTypeRR(z.data[a], dns.TypeNS) {
			return true
		}
	}
	return false
}

func hasTypeRR(rrs []dns.RR, t uint16) bool {
	for _, rr := range rrs {
		if rr.Header().Rrtype == t {
			return true
		}
	}
	return false
}

// newWorld signs zones (parents get their children's DS records unless
// wrongDS names the child, in which case its digest is altered).
func newWorld(t testing.TB, zones []*tzone, wrongDS map[string]bool) *world {
	w := &world{t: t, zones: map[string]*tzone{}}
	for _, z := range zones {
		z.origin = canon(z.origin)
		w.zones[z.origin] = z
		if !z.unsigned {
			z.keys(t)
		}
	}
	extra := map[string][]dns.RR{}
	for _, z := range zones {
		if z.origin == "." {
			continue
		}
		p := w.zoneFor(parent(z.origin), 0)
		if p == nil {
			continue
		}
		extra[p.origin] = append(extra[p.origin], mustRR(t, z.origin+" 3600 IN NS ns."+strings.TrimPrefix(z.origin, ".")))
		if !z.unsigned {
			digest := z.digest
			if digest == 0 {
				digest = dns.SHA256
			}
			ds := z.ksk.ToDS(digest)
			ds.Hdr.Ttl = 3600
			if wrongDS[z.origin] {
				ds.Digest = strings.Repeat("AB", 32)
			}
			extra[p.origin] = append(extra[p.origin], ds)
		}
	}
	for _, z := range zones {
		z.extra = extra[z.origin]
		z.sign(t, z.extra)
	}
	return w
}

// resign signs zone z again (after its keys changed).
func (w *world) resign(t testing.TB, z *tzone) {
	z.names, z.nsec3Chain = nil, nil
	var extra []dns.RR
	for _, rr := range z.extra {
		extra = append(extra, dns.Copy(rr))
	}
	z.sign(t, extra)
}

func (w *world) anchor() []dns.RR {
	ds := w.zones["."].ksk.ToDS(dns.SHA256)
	ds.Hdr.Ttl = 3600
	return []dns.RR{ds}
}

// zoneFor returns the deepest zone containing name (for DS, the parent).
func (w *world) zoneFor(name string, qtype uint16) *tzone {
	name = canon(name)
	for n := name; ; n = parent(n) {
		if z := w.zones[n]; z != nil && !(qtype == dns.TypeDS && n == name && n != ".") {
			return z
		}
		if n == "." {
			return nil
		}
	}
}

func (w *world) Exchange(_ context.Context, q *dns.Msg) (*dns.Msg, error) {
	w.mu.Lock()
	w.asked = append(w.asked, fmt.Sprintf("%s/%s", q.Question[0].Name, dns.TypeToString[q.Question[0].Qtype]))
	w.mu.Unlock()
	resp := w.query(q.Question[0].Name, q.Question[0].Qtype)
	resp.Id = q.Id
	resp.Question = q.Question
	if w.tamper != nil {
		w.tamper(q, resp)
	}
	return resp, nil
}

func (w *world) query(name string, qtype uint16) *dns.Msg {
	resp := new(dns.Msg)
	resp.Response = true
	resp.RecursionAvailable = true
	resp.Question = []dns.Question{{Name: name, Qtype: qtype, Qclass: dns.ClassINET}}
	name = canon(name)
	for i := 0; i < 8; i++ {
		z := w.zoneFor(name, qtype)
		if z == nil {
			resp.Rcode = dns.RcodeServerFailure
			return resp
		}
		next := z.answer(resp, name, qtype)
		if next == "" {
			return resp
		}
		name = next
	}
	return resp
}

func pick(rrs []dns.RR, typ uint16) []dns.RR {
	var out []dns.RR
	for _, rr := range rrs {
		h := rr.Header()
		if h.Rrtype == typ || (h.Rrtype == dns.TypeRRSIG && rr.(*dns.RRSIG).TypeCovered == typ) {
			out = append(out, dns.Copy(rr))
		}
	}
	return out
}

func rename(rrs []dns.RR, name string) []dns.RR {
	for _, rr := range rrs {
		rr.Header().Name = name
	}
	return rrs
}

func (z *tzone) nsecCovering(name string) string {
	var prev string
	for _, n := range z.names {
		if compareNames(n, name) < 0 {
			prev = n
		}
	}
	if prev == "" {
		prev = z.names[len(z.names)-1]
	}
	return prev
}

func (z *tzone) nsec3Covering(name string) *dns.NSEC3 {
	h := dns.HashName(name, dns.SHA1, z.iter, z.salt)
	var best *dns.NSEC3
	for _, n := range z.nsec3Chain {
		if ownerHash(n) < h {
			best = n
		}
	}
	if best == nil {
		best = z.nsec3Chain[len(z.nsec3Chain)-1]
	}
	return best
}

func (z *tzone) nsec3Matching(name string) *dns.NSEC3 {
	h := dns.HashName(name, dns.SHA1, z.iter, z.salt)
	for _, n := range z.nsec3Chain {
		if ownerHash(n) == h {
			return n
		}
	}
	return nil
}

// proof appends the NSEC or NSEC3 RRset (with RRSIGs) owned by owner.
func (z *tzone) proof(resp *dns.Msg, owner string, seen map[string]bool) {
	if seen[owner] {
		return
	}
	seen[owner] = true
	typ := dns.TypeNSEC
	if z.nsec3 {
		typ = dns.TypeNSEC3
	}
	resp.Ns = append(resp.Ns, pick(z.data[owner], typ)...)
}

func (z *tzone) closestEncloser(name string) (ce, nc string) {
	nc = name
	for c := parent(name); ; c = parent(c) {
		if z.exists[c] || c == z.origin {
			return c, nc
		}
		nc = c
	}
}

// answer answers name/qtype from z; it returns a CNAME/DNAME target to follow.
func (z *tzone) answer(resp *dns.Msg, name string, qtype uint16) string {
	seen := map[string]bool{}
	neg := func(rcode int) {
		resp.Rcode = rcode
		resp.Ns = append(resp.Ns, pick(z.data[z.origin], dns.TypeSOA)...)
	}
	if z.unsigned {
		if rrs := pick(z.data[name], qtype); len(rrs) > 0 {
			resp.Answer = append(resp.Answer, rrs...)
			return ""
		}
		if c := pick(z.data[name], dns.TypeCNAME); len(c) > 0 {
			resp.Answer = append(resp.Answer, c...)
			return canon(c[0].(*dns.CNAME).Target)
		}
		if z.exists[name] {
			neg(dns.RcodeSuccess)
		} else {
			neg(dns.RcodeNameError)
		}
		return ""
	}
	if z.exists[name] {
		if rrs := pick(z.data[name], qtype); len(rrs) > 0 && (qtype == dns.TypeDS || name == z.origin || !hasTypeRR(z.data[name], dns.TypeNS)) {
			resp.Answer = append(resp.Answer, rrs...)
			return ""
		}
		if c := pick(z.data[name], dns.TypeCNAME); len(c) > 0 {
			resp.Answer = append(resp.Answer, c...)
			return canon(c[0].(*dns.CNAME).Target)
		}
		neg(dns.RcodeSuccess)
		if !z.nsec3 {
			if len(z.data[name]) > 0 {
				z.proof(resp, name, seen)
			} else { // empty non-terminal
				z.proof(resp, z.nsecCovering(name), seen)
			}
			return ""
		}
		if m := z.nsec3Matching(name); m != nil {
			z.proof(resp, m.Hdr.Name, seen)
			return ""
		}
		// Opt-out: closest encloser proof.
		ce, nc := z.closestEncloser(name)
		z.proof(resp, z.nsec3Matching(ce).Hdr.Name, seen)
		z.proof(resp, z.nsec3Covering(nc).Hdr.Name, seen)
		return ""
	}
	// DNAME at an ancestor.
	for a := parent(name); dns.IsSubDomain(z.origin, a); a = parent(a) {
		if d := pick(z.data[a], dns.TypeDNAME); len(d) > 0 {
			resp.Answer = append(resp.Answer, d...)
			target := strings.TrimSuffix(name, a) + d[0].(*dns.DNAME).Target
			resp.Answer = append(resp.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 300}, Target: target})
			return canon(target)
		}
		if a == z.origin {
			break
		}
	}
	ce, nc := z.closestEncloser(name)
	wc := "*." + ce
	if z.exists[wc] {
		if rrs := pick(z.data[wc], qtype); len(rrs) > 0 {
			resp.Answer = append(resp.Answer, rename(rrs, name)...)
			if z.nsec3 {
				z.proof(resp, z.nsec3Covering(nc).Hdr.Name, seen)
			} else {
				z.proof(resp, z.nsecCovering(name), seen)
			}
			return ""
		}
		neg(dns.RcodeSuccess)
		if z.nsec3 {
			z.proof(resp, z.nsec3Matching(ce).Hdr.Name, seen)
			z.proof(resp, z.nsec3Covering(nc).Hdr.Name, seen)
			z.proof(resp, z.nsec3Matching(wc).Hdr.Name, seen)
		} else {
			z.proof(resp, z.nsecCovering(name), seen)
			z.proof(resp, wc, seen)
		}
		return ""
	}
	neg(dns.RcodeNameError)
	if z.nsec3 {
		z.proof(resp, z.nsec3Matching(ce).Hdr.Name, seen)
		z.proof(resp, z.nsec3Covering(nc).Hdr.Name, seen)
		z.proof(resp, z.nsec3Covering(wc).Hdr.Name, seen)
	} else {
		z.proof(resp, z.nsecCovering(name), seen)
		z.proof(resp, z.nsecCovering(wc), seen)
	}
	return ""
}
