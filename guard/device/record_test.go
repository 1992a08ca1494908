package device

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestRecordRoundTrip(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	yes := true
	r := &Record{ID: "20:f8:5e:ca:91:52", MAC: "20:f8:5e:ca:91:52", FirstSeen: now, LastSeen: now, Queries: 7,
		IDState: []byte{1, 2, 3}, Override: &Override{Class: "cams", Strict: &yes}}
	r.noteIP("192.168.1.20")
	r.noteIP("192.168.1.21")
	r.noteIP("192.168.1.20")
	r.noteName("aria")
	r.noteBypass("do53", "8.8.8.8:53", now)
	r.noteBypass("do53", "8.8.8.8:53", now.Add(time.Second))
	r.noteBypass("dot", "1.1.1.1:853", now)
	b, err := EncodeRecord(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != r.ID || got.Queries != 7 || !bytes.Equal(got.IDState, r.IDState) || got.Override.Class != "cams" || !*got.Override.Strict {
		t.Errorf("round trip lost fields: %+v", got)
	}
	if strings.Join(got.IPs, ",") != "192.168.1.20,192.168.1.21" {
		t.Errorf("IPs = %v, want most recent first", got.IPs)
	}
	if got.BypassTotal() != 3 || len(got.Bypass) != 2 || got.Bypass[0].Count != 2 {
		t.Errorf("bypass = %+v", got.Bypass)
	}
}

func TestDecodeRecordRejects(t *testing.T) {
	for name, in := range map[string]string{
		"not json":    "{",
		"old schema":  `{"v":0,"id":"x"}`,
		"no id":       `{"v":1}`,
		"bad mac":     `{"v":1,"id":"x","mac":"zz"}`,
		"too many ip": `{"v":1,"id":"x","ips":["1","2","3","4","5","6","7","8","9"]}`,
	} {
		if _, err := DecodeRecord([]byte(in)); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	if _, err := DecodeRecord([]byte(`{"v":0,"id":"x"}`)); !errors.Is(err, ErrSchema) {
		t.Errorf("old schema: err %v, want ErrSchema", err)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	b, _ := EncodeRecord(&Record{ID: "aa:bb:cc:dd:ee:ff", MAC: "aa:bb:cc:dd:ee:ff", IPs: []string{"10.0.0.2"}})
	f.Add(b)
	f.Add([]byte(`{"v":1,"id":"ip:10.0.0.3","bypass":[{"kind":"dot","target":"1.1.1.1:853","count":3}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecord(b)
		if err != nil {
			return
		}
		if r.ID == "" || len(r.IPs) > maxIPs {
			t.Fatalf("decoded a record that breaks its bounds: %+v", r)
		}
		// What decodes must encode and decode to the same thing.
		b2, err := EncodeRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeRecord(b2); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		_ = ViewOf(r, nil) // must not panic on any stored estimator state
	})
}
