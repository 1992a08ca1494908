package upstream

import (
	"encoding/hex"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/http2/hpack"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fields(kv ...string) []hpackField {
	var out []hpackField
	for i := 0; i < len(kv); i += 2 {
		out = append(out, hpackField{kv[i], kv[i+1]})
	}
	return out
}

// RFC 7541 Appendix C.4 (requests, Huffman) and C.6 (responses,
// Huffman, a 256-octet table with evictions): the blocks decode to the
// fields, and the dynamic table ends as the RFC shows.
func TestHPACKAppendixC(t *testing.T) {
	series := []struct {
		name  string
		limit int
		steps []struct {
			block   string
			want    []hpackField
			table   []hpackField // newest first
			tableSz int
		}
	}{
		{"C.4", 4096, []struct {
			block   string
			want    []hpackField
			table   []hpackField
			tableSz int
		}{
			{"8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
				fields(":method", "GET", ":scheme", "http", ":path", "/", ":authority", "www.example.com"),
				fields(":authority", "www.example.com"), 57},
			{"8286 84be 5886 a8eb 1064 9cbf",
				fields(":method", "GET", ":scheme", "http", ":path", "/", ":authority", "www.example.com", "cache-control", "no-cache"),
				fields("cache-control", "no-cache", ":authority", "www.example.com"), 110},
			{"8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
				fields(":method", "GET", ":scheme", "https", ":path", "/index.html", ":authority", "www.example.com", "custom-key", "custom-value"),
				fields("custom-key", "custom-value", "cache-control", "no-cache", ":authority", "www.example.com"), 164},
		}},
		{"C.6", 256, []struct {
			block   string
			want    []hpackField
			table   []hpackField
			tableSz int
		}{
			{`4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
			  2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3`,
				fields(":status", "302", "cache-control", "private", "date", "Mon, 21 Oct 2013 20:13:21 GMT", "location", "https://www.example.com"),
				fields("location", "https://www.example.com", "date", "Mon, 21 Oct 2013 20:13:21 GMT", "cache-control", "private", ":status", "302"), 222},
			{"4883 640e ffc1 c0bf",
				fields(":status", "307", "cache-control", "private", "date", "Mon, 21 Oct 2013 20:13:21 GMT", "location", "https://www.example.com"),
				fields(":status", "307", "location", "https://www.example.com", "date", "Mon, 21 Oct 2013 20:13:21 GMT", "cache-control", "private"), 222},
			{`88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
			  77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
			  9587 3160 65c0 03ed 4ee5 b106 3d50 07`,
				fields(":status", "200", "cache-control", "private", "date", "Mon, 21 Oct 2013 20:13:22 GMT", "location", "https://www.example.com",
					"content-encoding", "gzip", "set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"),
				fields("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1", "content-encoding", "gzip", "date", "Mon, 21 Oct 2013 20:13:22 GMT"), 215},
		}},
	}
	for _, s := range series {
		d := newHPACKDecoder(s.limit)
		for i, st := range s.steps {
			got, err := d.decode(unhex(t, st.block), 1<<16)
			if err != nil || !slices.Equal(got, st.want) {
				t.Fatalf("%s #%d: %v %v", s.name, i+1, got, err)
			}
			table := slices.Clone(d.dyn)
			slices.Reverse(table)
			if !slices.Equal(table, st.table) || d.size != st.tableSz {
				t.Fatalf("%s #%d: table %v (%d octets), want %v (%d)", s.name, i+1, table, d.size, st.table, st.tableSz)
			}
		}
	}
}

// Blocks from x/net's encoder (Huffman, indexing, table size changes,
// sensitive fields) decode to what was encoded, over many blocks sharing
// one dynamic table; and every octet Huffman-codes and decodes back.
func TestHPACKAgainstXNet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var buf strings.Builder
	enc := hpack.NewEncoder(&buf)
	d := newHPACKDecoder(4096)
	names := []string{":status", "content-type", "content-length", "date", "server", "x-a", "x-custom-header-with-a-long-name", "cache-control"}
	for block := range 300 {
		buf.Reset()
		if block%37 == 5 {
			enc.SetMaxDynamicTableSize(uint32(rng.IntN(4097)))
		}
		var want []hpackField
		for range 1 + rng.IntN(8) {
			v := make([]byte, rng.IntN(60))
			for i := range v {
				v[i] = byte(rng.IntN(256))
			}
			if rng.IntN(2) == 0 {
				v = []byte("application/dns-message")
			}
			f := hpack.HeaderField{Name: names[rng.IntN(len(names))], Value: string(v), Sensitive: rng.IntN(10) == 0}
			if err := enc.WriteField(f); err != nil {
				t.Fatal(err)
			}
			want = append(want, hpackField{f.Name, f.Value})
		}
		got, err := d.decode([]byte(buf.String()), 1<<16)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("block %d: %q %v, want %q", block, got, err, want)
		}
	}
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	for _, s := range []string{string(all), "", "a", "www.example.com", strings.Repeat("\xff\x00", 40)} {
		h := hpack.AppendHuffmanString(nil, s)
		got, err := huffmanDecode(h, 1<<16)
		if err != nil || got != s {
			t.Errorf("huffman %q: %q %v", s, got, err)
		}
	}
}

// What the Huffman decoder must refuse (RFC 7541 §5.2), and the bounds.
func TestHPACKRefuses(t *testing.T) {
	for _, c := range []struct {
		name  string
		block []byte
	}{
		// A literal named "a" whose value is the Huffman string given.
		{"padding longer than 7 bits", []byte{0x00, 0x01, 'a', 0x82, 0x1f, 0xff}}, // 'a' and 11 ones
		{"padding not ones", []byte{0x00, 0x01, 'a', 0x81, 0x18}},                 // 'a' and 000
		{"EOS in the string", []byte{0x00, 0x01, 'a', 0x84, 0xff, 0xff, 0xff, 0xfc}},
		{"index 0", []byte{0x80}},
		{"index beyond the tables", []byte{0xbf}},
		{"size update above the limit", []byte{0x3f, 0xe2, 0x1f}},
		{"size update after a field", []byte{0x82, 0x20}},
		{"string longer than the block", []byte{0x00, 0x85, 'a'}},
		{"integer overflow", []byte{0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{"truncated integer", []byte{0x7f, 0xff}},
	} {
		if got, err := newHPACKDecoder(4096).decode(c.block, 1<<16); err == nil {
			t.Errorf("%s: decoded %q", c.name, got)
		}
	}
	// The same with valid padding decodes.
	if got, err := newHPACKDecoder(4096).decode([]byte{0x00, 0x01, 'a', 0x81, 0x1f}, 1<<16); err != nil || len(got) != 1 || got[0].value != "a" {
		t.Errorf("'a' with 3 bits of padding: %q %v", got, err)
	}
	// The header list bound.
	big := hpackAppendLiteral(nil, hpackContentType, strings.Repeat("v", 200))
	if _, err := newHPACKDecoder(4096).decode(big, 100); err == nil {
		t.Error("200-octet value under a 100-octet list bound")
	}
}

// The request block, read by x/net's decoder.
func TestHPACKEncoder(t *testing.T) {
	b := hpackAppendInt(nil, 0x20, 5, 0)
	b = hpackAppendInt(b, 0x80, 7, hpackMethodPOST)
	b = hpackAppendInt(b, 0x80, 7, hpackSchemeHTTPS)
	long := strings.Repeat("p", 300) // multi-octet lengths
	b = hpackAppendLiteral(b, hpackAuthority, "doh.test:8443")
	b = hpackAppendLiteral(b, hpackPath, "/dns-query?"+long)
	b = hpackAppendLiteral(b, hpackContentType, MediaType)
	b = hpackAppendLiteral(b, hpackAccept, MediaType)
	b = hpackAppendLiteral(b, hpackContentLength, "128")
	got, err := hpack.NewDecoder(4096, nil).DecodeFull(b)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{":method", "POST", ":scheme", "https", ":authority", "doh.test:8443", ":path", "/dns-query?" + long,
		"content-type", MediaType, "accept", MediaType, "content-length", "128"}
	var flat []string
	for _, f := range got {
		flat = append(flat, f.Name, f.Value)
	}
	if !slices.Equal(flat, want) {
		t.Errorf("decoded %q", flat)
	}
}

func FuzzHPACKDecode(f *testing.F) {
	f.Add(unhex(f, "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"))
	f.Add(unhex(f, "4883 640e ffc1 c0bf"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d := newHPACKDecoder(256)
		got, err := d.decode(b, 1024)
		if err != nil {
			return
		}
		list := 0
		for _, f := range got {
			list += len(f.name) + len(f.value) + 32
		}
		if list > 1024 || d.size > d.maxSize || d.maxSize > 256 {
			t.Fatalf("list %d, table %d of %d", list, d.size, d.maxSize)
		}
	})
}
