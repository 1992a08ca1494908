package policy

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// ParseTrustAnchor parses one trust anchor in presentation format, a DS
// record or a DNSKEY record:
//
//	OWNER [TTL] [IN] DS KEYTAG ALGORITHM DIGESTTYPE DIGEST
//	OWNER [TTL] [IN] DNSKEY FLAGS PROTOCOL ALGORITHM PUBLICKEY
//
// giving what dns.NewRR gives for these lines (TTL 3600 when absent, the
// digest and key joined when split by blanks, a DS algorithm by number or
// mnemonic, ';' starting a comment, parentheses ignored), without miekg's
// zone-file parser: dns.NewRR links the parser of every record type, about
// 200 kB of the mipsle binary. The digest must be hex and the key base64.
func ParseTrustAnchor(s string) (dns.RR, error) {
	if i := strings.IndexByte(s, ';'); i >= 0 {
		s = s[:i]
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) {
		return nil, errors.New("control character")
	}
	depth := 0
	blank := func(i int) bool { return i < 0 || i >= len(s) || s[i] == ' ' || s[i] == '\t' }
	for i := range len(s) {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
		default:
			continue
		}
		if depth < 0 || depth > 1 {
			return nil, errors.New("unbalanced parentheses")
		}
		// Readers differ on "DS(1": miekg's does not take it as zone
		// files do, so a parenthesis stands apart from the fields.
		if !blank(i-1) || !blank(i+1) {
			return nil, errors.New("a parenthesis must stand apart from the fields, with blanks around it")
		}
	}
	if depth != 0 {
		return nil, errors.New("unbalanced parentheses")
	}
	// Fields are separated by blanks (space and tab) only, as in a zone
	// file.
	f := strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '\t' || r == '(' || r == ')' })
	if len(f) == 0 {
		return nil, errors.New("empty")
	}
	if s[0] == ' ' || s[0] == '\t' { // in a zone file: the previous owner
		return nil, errors.New("no owner name")
	}
	owner := f[0]
	if _, ok := dns.IsDomainName(owner); !ok {
		return nil, fmt.Errorf("bad owner name %q", owner)
	}
	hdr := dns.RR_Header{Name: dns.Fqdn(owner), Class: dns.ClassINET, Ttl: 3600}
	f = f[1:]
	ttlSeen, classSeen := false, false
	for len(f) > 0 { // TTL and class, each at most once, in either order
		if ttl, err := strconv.ParseUint(f[0], 10, 32); err == nil && !ttlSeen {
			hdr.Ttl, ttlSeen = uint32(ttl), true
		} else if strings.EqualFold(f[0], "IN") && !classSeen {
			classSeen = true
		} else {
			break
		}
		f = f[1:]
	}
	if len(f) == 0 {
		return nil, errors.New("no record type")
	}
	typ, f := strings.ToUpper(f[0]), f[1:]
	if (typ == "DS" || typ == "DNSKEY") && len(f) < 4 {
		return nil, fmt.Errorf("%s record with %d fields, want 4", typ, len(f))
	}
	switch typ {
	case "DS":
		tag, err := strconv.ParseUint(f[0], 10, 16)
		if err != nil {
			return nil, fmt.Errorf("bad DS key tag %q", f[0])
		}
		alg, err := strconv.ParseUint(f[1], 10, 8)
		if err != nil {
			a, ok := dns.StringToAlgorithm[strings.ToUpper(f[1])]
			if !ok {
				return nil, fmt.Errorf("bad DS algorithm %q", f[1])
			}
			alg = uint64(a)
		}
		dt, err := strconv.ParseUint(f[2], 10, 8)
		if err != nil {
			return nil, fmt.Errorf("bad DS digest type %q", f[2])
		}
		digest := strings.Join(f[3:], "")
		if _, err := hex.DecodeString(digest); err != nil {
			return nil, fmt.Errorf("bad DS digest: %v", err)
		}
		hdr.Rrtype = dns.TypeDS
		return &dns.DS{Hdr: hdr, KeyTag: uint16(tag), Algorithm: uint8(alg), DigestType: uint8(dt), Digest: digest}, nil
	case "DNSKEY":
		flags, err1 := strconv.ParseUint(f[0], 10, 16)
		proto, err2 := strconv.ParseUint(f[1], 10, 8)
		alg, err3 := strconv.ParseUint(f[2], 10, 8)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("bad DNSKEY flags, protocol or algorithm: %v", err)
		}
		key := strings.Join(f[3:], "")
		if _, err := base64.StdEncoding.DecodeString(key); err != nil {
			return nil, fmt.Errorf("bad DNSKEY public key: %v", err)
		}
		hdr.Rrtype = dns.TypeDNSKEY
		return &dns.DNSKEY{Hdr: hdr, Flags: uint16(flags), Protocol: uint8(proto), Algorithm: uint8(alg), PublicKey: key}, nil
	}
	return nil, fmt.Errorf("want a DS or DNSKEY record, not %s", typ)
}
