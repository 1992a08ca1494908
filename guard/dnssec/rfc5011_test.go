package dnssec

import (
	"context"
	"crypto"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestRFC5011Rollover plays a root KSK roll against a validator whose
// anchor is the old key's DS: the new key is pending for 30 days, then
// trusted, so validation survives the old key's removal; a key revoked
// by its own signature is an anchor no more.
func TestRFC5011Rollover(t *testing.T) {
	w := newWorld(t, []*tzone{
		{origin: "."},
		{origin: "example.", records: []string{"www.example. 300 IN A 192.0.2.1"}},
	}, nil)
	root := w.zones["."]
	anchor := w.anchor()
	var saved []byte
	tr, err := NewTracker(nil, func(b []byte) { saved = b })
	if err != nil {
		t.Fatal(err)
	}
	clock := testNow
	validate := func(tr *Tracker) Result {
		t.Helper()
		v, err := New(w, Config{Anchors: anchor, Tracker: tr, Now: func() time.Time { return clock }})
		if err != nil {
			t.Fatal(err)
		}
		return v.Validate(context.Background(), ask(w, "www.example.", dns.TypeA))
	}
	resign := func(at time.Time) {
		for _, z := range w.zones {
			z.incept, z.expire = at.Add(-time.Hour), at.Add(30*24*time.Hour)
			w.resign(t, z)
		}
	}
	if got := validate(tr); got.Security != Secure {
		t.Fatalf("before the roll: %v", got)
	}
	// The new KSK is published beside the old one, both signing.
	newKSK := &dns.DNSKEY{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET, Ttl: 3600}, Flags: 257, Protocol: 3, Algorithm: dns.ECDSAP256SHA256}
	p, err := newKSK.Generate(256)
	if err != nil {
		t.Fatal(err)
	}
	root.moreKSK, root.morePriv = []*dns.DNSKEY{newKSK}, []crypto.Signer{p.(crypto.Signer)}
	resign(clock)
	if got := validate(tr); got.Security != Secure {
		t.Fatalf("both keys: %v", got)
	}
	trusts := func(tr *Tracker, k *dns.DNSKEY) bool {
		for _, x := range tr.Trusted(".") {
			if x.PublicKey == k.PublicKey {
				return true
			}
		}
		return false
	}
	if trusts(tr, newKSK) || !trusts(tr, root.ksk) || saved == nil {
		t.Fatalf("the new key is trusted at once, or the anchored one is not (or nothing saved): %s", saved)
	}
	// 29 days later: still pending.
	clock = testNow.Add(29 * 24 * time.Hour)
	resign(clock)
	validate(tr)
	if trusts(tr, newKSK) {
		t.Fatal("trusted before the hold-down")
	}
	// 31 days: trusted; the state survives a restart.
	clock = testNow.Add(31 * 24 * time.Hour)
	resign(clock)
	validate(tr)
	if !trusts(tr, newKSK) {
		t.Fatalf("not trusted after the hold-down: %s", saved)
	}
	tr2, err := NewTracker(saved, nil)
	if err != nil || !trusts(tr2, newKSK) {
		t.Fatalf("state did not survive: %v %s", err, saved)
	}
	// The old key is withdrawn: only the tracked key anchors the root.
	oldKSK, oldPriv := root.ksk, root.kpriv
	root.ksk, root.kpriv = newKSK, p.(crypto.Signer)
	root.moreKSK, root.morePriv = nil, nil
	resign(clock)
	if got := validate(tr2); got.Security != Secure {
		t.Errorf("after the roll with the tracked key: %v", got)
	}
	if got := validate(nil); got.Security != Bogus || got.EDE != dns.ExtendedErrorCodeDNSKEYMissing {
		t.Errorf("after the roll without tracking: %v (EDE %d)", got, got.EDE)
	}
	// The old key comes back revoked, signing the set itself: the old DS
	// anchor no longer makes it a trust anchor.
	revoked := dns.Copy(oldKSK).(*dns.DNSKEY)
	revoked.Flags |= dns.REVOKE
	root.ksk, root.kpriv = revoked, oldPriv
	root.moreKSK, root.morePriv = []*dns.DNSKEY{newKSK}, []crypto.Signer{p.(crypto.Signer)}
	resign(clock)
	if got := validate(tr2); got.Security != Secure {
		t.Errorf("with the old key revoked: %v", got)
	}
	if !tr2.Revoked(".", oldKSK) {
		t.Error("the old key is not marked revoked")
	}
	// A revoked key that does not sign the set is not believed.
	tr3, _ := NewTracker(nil, nil)
	root.ksk, root.kpriv = newKSK, p.(crypto.Signer)
	root.moreKSK, root.morePriv, root.publish = nil, nil, []*dns.DNSKEY{revoked}
	resign(clock)
	anchor = []dns.RR{newKSK.ToDS(dns.SHA256)}
	if got := validate(tr3); got.Security != Secure {
		t.Fatalf("new key as the anchor: %v", got)
	}
	if tr3.Revoked(".", oldKSK) {
		t.Error("a revocation the revoked key did not sign was believed")
	}
}

func TestTrackerState(t *testing.T) {
	if _, err := NewTracker([]byte("{not json"), nil); err == nil {
		t.Error("bad state accepted")
	}
	if _, err := NewTracker([]byte(`{".":[{"key":"nonsense","state":"valid"}]}`), nil); err == nil {
		t.Error("bad key accepted")
	}
	if tr, err := NewTracker([]byte("  "), nil); err != nil || len(tr.Trusted(".")) != 0 {
		t.Errorf("empty state: %v", err)
	}
}
