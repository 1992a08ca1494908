package upstream

import (
	"errors"
	"sync"
)

// HPACK (RFC 7541), as much as the DoH client needs: a full decoder
// (static and dynamic table, Huffman strings, table size updates) for the
// server's response headers, and an encoder that writes the request's
// few fields as literals against the static table and never uses the
// dynamic one. It replaces golang.org/x/net/http2/hpack, whose encoder
// tables and maps were 24 kB of the mipsle binary.

// hpackField is one header field.
type hpackField struct{ name, value string }

// hpackStatic is the static table (RFC 7541 Appendix A), index 1 first.
var hpackStatic = [61]hpackField{
	{":authority", ""},
	{":method", "GET"},
	{":method", "POST"},
	{":path", "/"},
	{":path", "/index.html"},
	{":scheme", "http"},
	{":scheme", "https"},
	{":status", "200"},
	{":status", "204"},
	{":status", "206"},
	{":status", "304"},
	{":status", "400"},
	{":status", "404"},
	{":status", "500"},
	{"accept-charset", ""},
	{"accept-encoding", "gzip, deflate"},
	{"accept-language", ""},
	{"accept-ranges", ""},
	{"accept", ""},
	{"access-control-allow-origin", ""},
	{"age", ""},
	{"allow", ""},
	{"authorization", ""},
	{"cache-control", ""},
	{"content-disposition", ""},
	{"content-encoding", ""},
	{"content-language", ""},
	{"content-length", ""},
	{"content-location", ""},
	{"content-range", ""},
	{"content-type", ""},
	{"cookie", ""},
	{"date", ""},
	{"etag", ""},
	{"expect", ""},
	{"expires", ""},
	{"from", ""},
	{"host", ""},
	{"if-match", ""},
	{"if-modified-since", ""},
	{"if-none-match", ""},
	{"if-range", ""},
	{"if-unmodified-since", ""},
	{"last-modified", ""},
	{"link", ""},
	{"location", ""},
	{"max-forwards", ""},
	{"proxy-authenticate", ""},
	{"proxy-authorization", ""},
	{"range", ""},
	{"referer", ""},
	{"refresh", ""},
	{"retry-after", ""},
	{"server", ""},
	{"set-cookie", ""},
	{"strict-transport-security", ""},
	{"transfer-encoding", ""},
	{"user-agent", ""},
	{"vary", ""},
	{"via", ""},
	{"www-authenticate", ""},
}

// Static table indexes the encoder uses.
const (
	hpackAuthority     = 1
	hpackMethodPOST    = 3
	hpackPath          = 4
	hpackSchemeHTTPS   = 7
	hpackAccept        = 19
	hpackContentLength = 28
	hpackContentType   = 31
)

// hpackCodeLen is the Huffman code length of each octet (RFC 7541
// Appendix B); EOS (256) has 30. The code is canonical: codes of one
// length are consecutive in symbol order, shorter ones first, so the
// lengths are all the decoder needs.
var hpackCodeLen = [256]uint8{
	13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
	28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
	6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
	5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
	13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
	7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
	15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
	6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
	20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
	24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
	22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
	21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
	26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
	19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
	20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
	26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
}

// hpackHuffman is the canonical decoding table built from hpackCodeLen.
type hpackHuffman struct {
	first  [31]uint32 // first code of each length
	count  [31]uint16 // codes of each length
	offset [31]uint16 // index in syms of the first symbol of each length
	syms   [257]uint16
}

var huffmanTable = sync.OnceValue(func() *hpackHuffman {
	h := new(hpackHuffman)
	length := func(s int) int {
		if s == 256 {
			return 30
		}
		return int(hpackCodeLen[s])
	}
	n := 0
	for l := 1; l <= 30; l++ {
		h.offset[l] = uint16(n)
		for s := 0; s <= 256; s++ {
			if length(s) == l {
				h.syms[n] = uint16(s)
				n++
				h.count[l]++
			}
		}
	}
	code := uint32(0)
	for l := 1; l <= 30; l++ {
		h.first[l] = code
		code = (code + uint32(h.count[l])) << 1
	}
	return h
})

// errHPACK is a header block that cannot be decoded: a COMPRESSION_ERROR.
var errHPACK = errors.New("malformed HPACK header block")

// hpackDecoder decodes the header blocks of one connection.
type hpackDecoder struct {
	limit   int          // the SETTINGS_HEADER_TABLE_SIZE we advertise
	maxSize int          // the table size the encoder chose (size updates)
	size    int          // octets in use (RFC 7541 §4.1)
	dyn     []hpackField // oldest first
}

func newHPACKDecoder(limit int) *hpackDecoder {
	return &hpackDecoder{limit: limit, maxSize: limit}
}

// decode returns the fields of one complete header block; maxList bounds
// their total size (names, values and 32 octets each, RFC 9113 §6.5.2).
func (d *hpackDecoder) decode(p []byte, maxList int) ([]hpackField, error) {
	return d.decodeInto(nil, p, maxList)
}

// decodeInto is decode appending to out[:0] (a slice reused from block to
// block).
func (d *hpackDecoder) decodeInto(out []hpackField, p []byte, maxList int) ([]hpackField, error) {
	out = out[:0]
	list := 0
	for len(p) > 0 {
		var f hpackField
		var err error
		switch b := p[0]; {
		case b&0x80 != 0: // indexed field
			var i uint64
			if i, p, err = hpackInt(p, 7); err != nil {
				return nil, err
			}
			if f, err = d.at(i); err != nil {
				return nil, err
			}
		case b&0xe0 == 0x20: // dynamic table size update, before any field
			var v uint64
			if v, p, err = hpackInt(p, 5); err != nil {
				return nil, err
			}
			if len(out) > 0 || v > uint64(d.limit) {
				return nil, errHPACK
			}
			d.maxSize = int(v)
			d.evict(0)
			continue
		default: // literal: with incremental indexing (01), without (0000) or never indexed (0001)
			prefix := 4
			if b&0xc0 == 0x40 {
				prefix = 6
			}
			var i uint64
			if i, p, err = hpackInt(p, prefix); err != nil {
				return nil, err
			}
			if i == 0 {
				if f.name, p, err = hpackString(p, maxList); err != nil {
					return nil, err
				}
			} else {
				var n hpackField
				if n, err = d.at(i); err != nil {
					return nil, err
				}
				f.name = n.name
			}
			if f.value, p, err = hpackString(p, maxList); err != nil {
				return nil, err
			}
			if prefix == 6 {
				d.add(f)
			}
		}
		if list += len(f.name) + len(f.value) + 32; list > maxList {
			return nil, errors.New("header list too large")
		}
		out = append(out, f)
	}
	return out, nil
}

// at returns the field at a table index (static 1-61, then the dynamic
// table newest first).
func (d *hpackDecoder) at(i uint64) (hpackField, error) {
	switch {
	case i >= 1 && i <= uint64(len(hpackStatic)):
		return hpackStatic[i-1], nil
	case i > uint64(len(hpackStatic)) && i-uint64(len(hpackStatic)) <= uint64(len(d.dyn)):
		return d.dyn[len(d.dyn)-int(i-uint64(len(hpackStatic)))], nil
	}
	return hpackField{}, errHPACK
}

// add inserts a field, evicting the oldest to make room (RFC 7541 §4.4).
func (d *hpackDecoder) add(f hpackField) {
	sz := len(f.name) + len(f.value) + 32
	if sz > d.maxSize {
		d.dyn, d.size = d.dyn[:0], 0
		return
	}
	d.evict(sz)
	d.dyn = append(d.dyn, f)
	d.size += sz
}

// evict drops the oldest entries until room more octets fit.
func (d *hpackDecoder) evict(room int) {
	k := 0
	for ; k < len(d.dyn) && d.size+room > d.maxSize; k++ {
		d.size -= len(d.dyn[k].name) + len(d.dyn[k].value) + 32
	}
	if k > 0 {
		d.dyn = append(d.dyn[:0], d.dyn[k:]...)
	}
}

// hpackInt reads an integer with an n-bit prefix (RFC 7541 §5.1).
func hpackInt(p []byte, n int) (uint64, []byte, error) {
	if len(p) == 0 {
		return 0, nil, errHPACK
	}
	mask := uint64(1)<<n - 1
	v := uint64(p[0]) & mask
	p = p[1:]
	if v < mask {
		return v, p, nil
	}
	for m := 0; len(p) > 0; m += 7 {
		b := p[0]
		p = p[1:]
		if m > 28 { // beyond any size this client accepts
			return 0, nil, errHPACK
		}
		v += uint64(b&0x7f) << m
		if b&0x80 == 0 {
			return v, p, nil
		}
	}
	return 0, nil, errHPACK
}

// hpackString reads a string literal, Huffman-coded or not (§5.2), of at
// most max octets.
func hpackString(p []byte, max int) (string, []byte, error) {
	if len(p) == 0 {
		return "", nil, errHPACK
	}
	huff := p[0]&0x80 != 0
	n, p, err := hpackInt(p, 7)
	if err != nil || n > uint64(len(p)) || n > uint64(max) {
		return "", nil, errHPACK
	}
	s, p := p[:n], p[n:]
	if !huff {
		return string(s), p, nil
	}
	out, err := huffmanDecode(s, max)
	return out, p, err
}

// huffmanDecode decodes a Huffman-coded string: canonical decoding bit by
// bit; the padding must be a prefix of EOS (all ones) shorter than an
// octet, and EOS itself is an error (RFC 7541 §5.2).
func huffmanDecode(s []byte, max int) (string, error) {
	h := huffmanTable()
	out := make([]byte, 0, len(s)*8/5)
	var code uint32
	length, ones := 0, true
	for _, b := range s {
		for bit := 7; bit >= 0; bit-- {
			v := uint32(b>>bit) & 1
			code = code<<1 | v
			length++
			ones = ones && v == 1
			if c := h.count[length]; c > 0 && code-h.first[length] < uint32(c) && code >= h.first[length] {
				sym := h.syms[int(h.offset[length])+int(code-h.first[length])]
				if sym == 256 || len(out) >= max {
					return "", errHPACK
				}
				out = append(out, byte(sym))
				code, length, ones = 0, 0, true
			} else if length == 30 {
				return "", errHPACK
			}
		}
	}
	if length > 7 || !ones {
		return "", errHPACK
	}
	return string(out), nil
}

// hpackAppendInt appends an integer with an n-bit prefix whose other bits
// are flags.
func hpackAppendInt(dst []byte, flags byte, n int, v uint64) []byte {
	mask := uint64(1)<<n - 1
	if v < mask {
		return append(dst, flags|byte(v))
	}
	dst = append(dst, flags|byte(mask))
	for v -= mask; v >= 0x80; v >>= 7 {
		dst = append(dst, byte(v)|0x80)
	}
	return append(dst, byte(v))
}

// hpackAppendLiteral appends a literal field without indexing whose name
// is static table entry name, and its value as a plain string.
func hpackAppendLiteral(dst []byte, name uint64, value string) []byte {
	dst = hpackAppendInt(dst, 0x00, 4, name)
	dst = hpackAppendInt(dst, 0x00, 7, uint64(len(value)))
	return append(dst, value...)
}
