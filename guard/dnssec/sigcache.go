package dnssec

import (
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// sigCache remembers signatures that verified, so that an RRset seen again
// (the NSEC of a wildcard with each expansion, the NSEC3 records of a
// zone's NXDOMAIN answers, a DNSKEY RRset) costs no public-key operation.
// The key is the signature's whole RDATA, the key's and the RRset's
// contents: the same key means the same signed data. Validity times are
// checked on every use, before the cache is consulted.
type sigCache struct {
	mu  sync.Mutex
	m   map[string]struct{}
	max int
}

func newSigCache(max int) *sigCache {
	return &sigCache{m: make(map[string]struct{}), max: max}
}

func sigKey(sig *dns.RRSIG, k *dns.DNSKEY, rrs []dns.RR) string {
	var b strings.Builder
	b.WriteString(strings.TrimPrefix(sig.String(), sig.Hdr.String()))
	b.WriteByte('|')
	b.WriteString(strconv.Itoa(int(k.Flags)))
	b.WriteByte(' ')
	b.WriteString(k.PublicKey)
	b.WriteByte('|')
	// The name signed: a wildcard expansion's is the wildcard's.
	owner := canon(rrs[0].Header().Name)
	if l := int(sig.Labels); l < dns.CountLabel(owner) {
		owner = strings.TrimSuffix("*."+suffix(owner, l), ".") + "."
	}
	b.WriteString(owner)
	b.WriteByte(' ')
	b.WriteString(strconv.Itoa(int(rrs[0].Header().Class)))
	rdata := make([]string, len(rrs))
	for i, rr := range rrs {
		rdata[i] = strings.TrimPrefix(rr.String(), rr.Header().String())
	}
	slices.Sort(rdata)
	for _, r := range rdata {
		b.WriteByte('|')
		b.WriteString(r)
	}
	return b.String()
}

func (c *sigCache) has(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.m[key]
	return ok
}

func (c *sigCache) add(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[key] = struct{}{}
}
