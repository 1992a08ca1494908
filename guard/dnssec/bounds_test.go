package dnssec

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestBoundsAndCache(t *testing.T) {
	w := testWorld(t, nil)
	now := func() time.Time { return testNow }

	// Too few upstream queries for the chain: indeterminate, counted.
	v, err := New(w, Config{Anchors: w.anchor(), Now: now, MaxQueries: 2})
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Validate(context.Background(), ask(w, "www.example.", dns.TypeA)); got.Security != Indeterminate || got.EDE != dns.ExtendedErrorCodeDNSSECIndeterminate {
		t.Errorf("query bound: got %v EDE %d", got, got.EDE)
	}
	if v.Stats().LimitHits == 0 {
		t.Error("query bound not counted")
	}

	// Chains of more zones than MaxDepth are not followed (root ->
	// example. -> child.example. is two); deep names are fine.
	v, _ = New(w, Config{Anchors: w.anchor(), Now: now, MaxDepth: 1})
	if got := v.Validate(context.Background(), ask(w, "www.child.example.", dns.TypeA)); got.Security != Indeterminate {
		t.Errorf("depth bound: got %v", got)
	}
	if got := v.Validate(context.Background(), ask(w, "www.example.", dns.TypeA)); got.Security != Secure {
		t.Errorf("within the depth bound: got %v", got)
	}
	deep := "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.www.insecure.example."
	if got := v.Validate(context.Background(), ask(w, deep, dns.TypeA)); got.Security != Insecure {
		t.Errorf("20-label name under an insecure delegation: got %v", got)
	}

	// Signature checks per validation.
	v, _ = New(w, Config{Anchors: w.anchor(), Now: now, MaxSignatures: 2})
	if got := v.Validate(context.Background(), ask(w, "www.example.", dns.TypeA)); got.Security != Indeterminate {
		t.Errorf("signature bound: got %v", got)
	}

	// The chain is cached: a second validation in the same zone asks nothing.
	v, _ = New(w, Config{Anchors: w.anchor(), Now: now})
	if got := v.Validate(context.Background(), ask(w, "www.example.", dns.TypeA)); got.Security != Secure {
		t.Fatalf("got %v", got)
	}
	before := v.Stats().Queries
	if before == 0 {
		t.Fatal("no upstream queries counted")
	}
	if got := v.Validate(context.Background(), ask(w, "www.example.", dns.TypeAAAA)); got.Security != Secure {
		t.Fatalf("got %v", got)
	}
	if after := v.Stats().Queries; after != before {
		t.Errorf("cached chain asked upstream again: %d -> %d queries", before, after)
	}

	// The cache is bounded.
	v, _ = New(w, Config{Anchors: w.anchor(), Now: now, CacheSize: 2})
	for _, n := range []string{"www.example.", "www.n3.", "www.rsa.", "www.ed.", "www.p384."} {
		v.Validate(context.Background(), ask(w, n, dns.TypeA))
	}
	v.mu.Lock()
	size := len(v.cache)
	v.mu.Unlock()
	if size > 2 || v.Stats().CacheEvictions == 0 {
		t.Errorf("cache holds %d entries, %d evictions", size, v.Stats().CacheEvictions)
	}

	// A bogus chain link is remembered for BogusTTL, then asked again.
	clock := testNow
	w2 := testWorld(t, map[string]bool{"wrongds.example.": true})
	v, _ = New(w2, Config{Anchors: w2.anchor(), Now: func() time.Time { return clock }})
	resp := ask(w2, "www.wrongds.example.", dns.TypeA)
	v.Validate(context.Background(), resp)
	q1 := v.Stats().Queries
	v.Validate(context.Background(), resp)
	if v.Stats().Queries != q1 {
		t.Error("bogus link not cached")
	}
	clock = clock.Add(61 * time.Second)
	v.Validate(context.Background(), resp)
	if v.Stats().Queries == q1 {
		t.Error("bogus link cached beyond 60 s")
	}
}

func TestAnchors(t *testing.T) {
	rrs, err := ParseAnchors([]string{RootAnchors})
	if err != nil || len(rrs) != 2 {
		t.Fatalf("built-in anchors: %v %v", rrs, err)
	}
	tags := map[uint16]bool{}
	for _, rr := range rrs {
		ds := rr.(*dns.DS)
		if ds.Algorithm != dns.RSASHA256 || ds.DigestType != dns.SHA256 {
			t.Errorf("anchor %v", ds)
		}
		tags[ds.KeyTag] = true
	}
	if !tags[20326] || !tags[38696] {
		t.Errorf("key tags %v", tags)
	}
	for _, bad := range []string{"example. 3600 IN A 192.0.2.1", "example. IN DNSKEY 0 3 8 AwEAAa==", "nonsense"} {
		if _, err := ParseAnchors([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	// A DNSKEY anchor works like a DS anchor.
	w := testWorld(t, nil)
	v, err := New(w, Config{Anchors: []dns.RR{w.zones["."].ksk}, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Validate(context.Background(), ask(w, "www.example.", dns.TypeA)); got.Security != Secure {
		t.Errorf("DNSKEY anchor: %v", got)
	}
	// An anchor below the root: names outside it are insecure.
	ds := w.zones["example."].ksk.ToDS(dns.SHA256)
	v, _ = New(w, Config{Anchors: []dns.RR{ds}, Now: func() time.Time { return testNow }})
	if got := v.Validate(context.Background(), ask(w, "www.example.", dns.TypeA)); got.Security != Secure {
		t.Errorf("example. anchor: %v", got)
	}
	if got := v.Validate(context.Background(), ask(w, "www.n3.", dns.TypeA)); got.Security != Insecure {
		t.Errorf("outside the anchor: %v", got)
	}
	if v.Covered("www.n3.") || !v.Covered("www.example.") {
		t.Error("Covered")
	}
}

// TestSignatureCache: a signature that verified once is not checked
// again for the same data, but altered data and expired signatures are
// still refused.
func TestSignatureCache(t *testing.T) {
	w := testWorld(t, nil)
	clock := testNow
	v, _ := New(w, Config{Anchors: w.anchor(), Now: func() time.Time { return clock }})
	resp := ask(w, "a.wild.example.", dns.TypeA)
	if got := v.Validate(context.Background(), resp); got.Security != Secure {
		t.Fatal(got)
	}
	sigs := v.Stats().Signatures
	other := ask(w, "b.wild.example.", dns.TypeA)
	if got := v.Validate(context.Background(), other); got.Security != Secure {
		t.Fatal(got)
	}
	// Both signatures are the wildcard's own (over *.wild.example.): the
	// expansion's A and the NSEC come from the signature cache.
	if n := v.Stats().Signatures - sigs; n != 0 {
		t.Errorf("%d signatures checked for a second wildcard expansion, want 0", n)
	}
	if got := v.Validate(context.Background(), ask(w, "www.example.", dns.TypeAAAA)); got.Security != Secure {
		t.Fatal(got)
	}
	if n := v.Stats().Signatures - sigs; n != 1 {
		t.Errorf("%d signatures checked for a new RRset, want 1", n)
	}
	if v.Stats().SignatureCacheHits == 0 {
		t.Error("no signature cache hits")
	}
	forged := ask(w, "a.wild.example.", dns.TypeA)
	for _, rr := range forged.Answer {
		if a, ok := rr.(*dns.A); ok {
			a.A = a.A.To4()
			a.A[3]++
		}
	}
	if got := v.Validate(context.Background(), forged); got.Security != Bogus {
		t.Errorf("altered data after its signature was cached: %v", got)
	}
	clock = testNow.Add(31 * 24 * time.Hour)
	v.FlushCache() // the keys' own cache would expire with them
	if got := v.Validate(context.Background(), resp); got.Security != Bogus || got.EDE != dns.ExtendedErrorCodeSignatureExpired {
		t.Errorf("expired signature after it was cached: %v (EDE %d)", got, got.EDE)
	}
}

// BenchmarkValidateMiss is the cost of validating one answer when the
// keys are cached (a cache miss of the answer cache in a known zone): the
// signature cache is cleared each time, so every RRSIG is checked.
func BenchmarkValidateMiss(b *testing.B) {
	for _, zone := range []string{"example.", "rsa.", "ed.", "n3."} {
		b.Run(zone, func(b *testing.B) {
			w := testWorld(b, nil)
			v, _ := New(w, Config{Anchors: w.anchor(), Now: func() time.Time { return testNow }})
			resp := ask(w, "www."+zone, dns.TypeA)
			if got := v.Validate(context.Background(), resp); got.Security != Secure {
				b.Fatal(got)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				v.verified.mu.Lock()
				clear(v.verified.m)
				v.verified.mu.Unlock()
				v.Validate(context.Background(), resp)
			}
		})
	}
	b.Run("nxdomain-n3", func(b *testing.B) {
		w := testWorld(b, nil)
		v, _ := New(w, Config{Anchors: w.anchor(), Now: func() time.Time { return testNow }})
		resp := ask(w, "nope.strict3.", dns.TypeA)
		if got := v.Validate(context.Background(), resp); got.Security != Secure {
			b.Fatal(got)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			v.verified.mu.Lock()
			clear(v.verified.m)
			v.verified.mu.Unlock()
			v.Validate(context.Background(), resp)
		}
	})
	// Distinct wildcard expansions: every signature is the wildcard's,
	// from the signature cache after the first.
	b.Run("wildcard-distinct", func(b *testing.B) {
		w := testWorld(b, nil)
		v, _ := New(w, Config{Anchors: w.anchor(), Now: func() time.Time { return testNow }})
		resps := make([]*dns.Msg, 2000)
		for i := range resps {
			resps[i] = ask(w, "n"+strconv.Itoa(i)+".wild.example.", dns.TypeA)
		}
		v.Validate(context.Background(), resps[0])
		b.ReportAllocs()
		b.ResetTimer()
		i := 0
		for b.Loop() {
			if i%len(resps) == 0 {
				v.verified.mu.Lock()
				clear(v.verified.m)
				v.verified.mu.Unlock()
				v.Validate(context.Background(), resps[0]) // the NSEC again
			}
			v.Validate(context.Background(), resps[i%len(resps)])
			i++
		}
	})
}

// BenchmarkValidateCold is the cost with an empty key cache: the whole
// chain (root, TLD, zone: DS and DNSKEY fetched from the in-memory world
// and verified) for every answer.
func BenchmarkValidateCold(b *testing.B) {
	w := testWorld(b, nil)
	v, _ := New(w, Config{Anchors: w.anchor(), Now: func() time.Time { return testNow }})
	resp := ask(w, "www.example.", dns.TypeA)
	b.ReportAllocs()
	for b.Loop() {
		v.FlushCache()
		if got := v.Validate(context.Background(), resp); got.Security != Secure {
			b.Fatal(got)
		}
	}
}

// TestConcurrentValidations: validations in parallel on a cold cache
// share the key queries and agree (run under -race).
func TestConcurrentValidations(t *testing.T) {
	w := testWorld(t, nil)
	v, _ := New(w, Config{Anchors: w.anchor(), Now: func() time.Time { return testNow }})
	names := []string{"www.example.", "www.n3.", "nope.example.", "a.wild.example.", "www.insecure.example.", "out.example."}
	resps := make([]*dns.Msg, len(names))
	for i, n := range names {
		resps[i] = ask(w, n, dns.TypeA)
	}
	want := []Security{Secure, Secure, Secure, Secure, Insecure, Secure}
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i := g % len(names)
			if got := v.Validate(context.Background(), resps[i].Copy()); got.Security != want[i] {
				errs <- names[i] + ": " + got.String()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if q := v.Stats().Queries; q > 16*6 {
		t.Errorf("%d key queries", q)
	}
}

// TestTTLCap: a secure answer's records live no longer than their
// signatures' original TTL, nor past the signatures' expiry.
func TestTTLCap(t *testing.T) {
	w := newWorld(t, []*tzone{
		{origin: "."},
		{origin: "soon.", expire: testNow.Add(100 * time.Second), records: []string{"www.soon. 300 IN A 192.0.2.1"}},
		{origin: "later.", records: []string{"www.later. 300 IN A 192.0.2.1"}},
	}, nil)
	clock := testNow
	v, _ := New(w, Config{Anchors: w.anchor(), Now: func() time.Time { return clock }})
	resp := ask(w, "www.later.", dns.TypeA)
	for _, rr := range resp.Answer {
		rr.Header().Ttl = 1_000_000 // an upstream stretching the TTL
	}
	if got := v.Validate(context.Background(), resp); got.Security != Secure || !got.Capped || got.TTLCap != 300 {
		t.Errorf("later: %+v", got)
	}
	if got := v.Validate(context.Background(), ask(w, "www.soon.", dns.TypeA)); got.Security != Secure || !got.Capped || got.TTLCap != 100 {
		t.Errorf("soon: %+v", got)
	}
	if got := v.Validate(context.Background(), ask(w, "nope.later.", dns.TypeA)); got.Security != Secure || !got.Capped || got.TTLCap > 300 {
		t.Errorf("negative: %+v", got)
	}
}

// TestAlgorithmsAndDigests: RSASHA512 and DS digest 4 validate; a zone
// whose DS uses only SHA-1 is insecure (digest 1 is not supported here).
func TestAlgorithmsAndDigests(t *testing.T) {
	w := newWorld(t, []*tzone{
		{origin: "."},
		{origin: "rsa512.", alg: dns.RSASHA512, records: []string{"www.rsa512. 300 IN A 192.0.2.1"}},
		{origin: "sha384.", digest: dns.SHA384, records: []string{"www.sha384. 300 IN A 192.0.2.1"}},
		{origin: "sha1.", digest: dns.SHA1, records: []string{"www.sha1. 300 IN A 192.0.2.1"}},
	}, nil)
	root := w.zones["."].ksk.ToDS(dns.SHA384)
	v, _ := New(w, Config{Anchors: []dns.RR{root}, Now: func() time.Time { return testNow }})
	for _, tc := range []struct {
		name string
		want Security
		ede  uint16
	}{{"www.rsa512.", Secure, 0}, {"www.sha384.", Secure, 0}, {"www.sha1.", Insecure, dns.ExtendedErrorCodeUnsupportedDSDigestType}} {
		if got := v.Validate(context.Background(), ask(w, tc.name, dns.TypeA)); got.Security != tc.want || got.EDE != tc.ede {
			t.Errorf("%s: %+v", tc.name, got)
		}
	}
}

// TestDeepZoneShortcut: the DS answer's signer names the zone holding a
// cut, so a signed zone 16 labels below its parent costs a handful of
// queries, not one per label (more than a validation may make).
func TestDeepZoneShortcut(t *testing.T) {
	deep := "p.o.n.m.l.k.j.i.h.g.f.e.d.c.b.a.deep."
	w := newWorld(t, []*tzone{
		{origin: "."},
		{origin: "deep.", records: []string{"x.deep. 300 IN A 192.0.2.1"}},
		{origin: deep, records: []string{"www." + deep + " 300 IN A 192.0.2.2"}},
	}, nil)
	v, _ := New(w, Config{Anchors: w.anchor(), Now: func() time.Time { return testNow }})
	if got := v.Validate(context.Background(), ask(w, "www."+deep, dns.TypeA)); got.Security != Secure {
		t.Fatalf("got %v", got)
	}
	// DS and DNSKEY of the deep zone and of deep., the root's DNSKEY.
	if q := v.Stats().Queries; q > 5 {
		t.Errorf("%d queries for the chain", q)
	}
	// An unsigned answer under it (a forged one) is still caught.
	forged := ask(w, "www."+deep, dns.TypeA)
	forged.Answer = dropTypes(forged.Answer, dns.TypeRRSIG)
	if got := v.Validate(context.Background(), forged); got.Security != Bogus || got.EDE != dns.ExtendedErrorCodeRRSIGsMissing {
		t.Errorf("unsigned: %v", got)
	}
}
