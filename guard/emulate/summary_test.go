package emulate

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func reply(rcode int, ede int, rrs ...string) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion("x.example.", dns.TypeA)
	m.Response, m.Rcode = true, rcode
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			panic(err)
		}
		m.Answer = append(m.Answer, rr)
	}
	if ede >= 0 {
		m.SetEdns0(1232, false)
		opt := m.IsEdns0()
		opt.Option = append(opt.Option, &dns.EDNS0_EDE{InfoCode: uint16(ede)})
	}
	return m
}

func TestSummaryAdd(t *testing.T) {
	a := "x.example. 60 IN A 198.51.100.7"
	forged := "x.example. 60 IN A 192.0.2.1"
	exs := []Exchange{
		{Type: dns.TypeA, Reply: reply(dns.RcodeSuccess, -1, a)},                        // usable
		{Type: dns.TypeA, Reply: reply(dns.RcodeSuccess, -1, a, forged, forged)},        // usable, 3 records
		{Type: dns.TypeA, Reply: reply(dns.RcodeServerFailure, 22)},                     // failed, EDE 22
		{Type: dns.TypeA, Reply: reply(dns.RcodeServerFailure, 22)},                     // failed, EDE 22
		{Type: dns.TypeA, Reply: reply(dns.RcodeRefused, -1)},                           // failed
		{Type: dns.TypeA, Reply: reply(dns.RcodeNameError, 3)},                          // failed, EDE 3
		{Type: dns.TypeA, Reply: reply(dns.RcodeSuccess, -1)},                           // NODATA: failed
		{Type: dns.TypeAAAA, Reply: reply(dns.RcodeSuccess, -1, a)},                     // A for AAAA: failed
		{Type: dns.TypeA, Err: errTimeout},                                              // timeout
		{Type: dns.TypeA, Err: fmt.Errorf("read: %w", context.Canceled)},                // cut by the run's end
		{Type: dns.TypeA, Err: fmt.Errorf("read: %w", context.DeadlineExceeded)},        // cut by the run's end
		{Type: dns.TypeA, Reply: reply(dns.RcodeSuccess, -1, a), Err: context.Canceled}, // cut, even with a reply
	}
	s := Summary{Addrs: map[netip.Addr]int{}, EDE: map[uint16]int{}}
	for _, ex := range exs {
		s.add(ex)
	}
	want := Summary{Queries: 9, Usable: 2, Failed: 7, Timeouts: 1, ServFail: 2, Refused: 1, NXDomain: 1, Records: 5, Answers: 8}
	got := s
	got.Addrs, got.EDE = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("summary %+v\nwant    %+v", got, want)
	}
	if s.Addrs[netip.MustParseAddr("198.51.100.7")] != 3 || s.Addrs[netip.MustParseAddr("192.0.2.1")] != 2 || len(s.Addrs) != 2 {
		t.Errorf("addresses %v", s.Addrs)
	}
	if s.EDE[22] != 2 || s.EDE[3] != 1 || len(s.EDE) != 2 {
		t.Errorf("EDE %v", s.EDE)
	}
	if r := s.RecordsPerAnswer(); r != 5.0/8 {
		t.Errorf("records per answer %v", r)
	}
	if r := (&Summary{}).RecordsPerAnswer(); r != 0 {
		t.Errorf("records per answer without answers: %v", r)
	}
}

// TestSummarizeDevices: the datagrams of every device are counted, flood
// copies included, beside their exchanges.
func TestSummarizeDevices(t *testing.T) {
	r := startResponder(t, 3)
	p, _ := ProfileByName("fixed-port")
	var devs []*Device
	for range 2 {
		d := New(Config{Profile: p, Target: r.addr, Local: loopback()})
		if ex := d.Query(context.Background(), "s.example.", dns.TypeA); ex.Failed() {
			t.Fatal(ex.Err)
		}
		devs = append(devs, d)
	}
	for _, d := range devs {
		waitReceived(t, d, 3)
		d.Close()
	}
	s := Summarize(devs...)
	if s.Queries != 2 || s.Usable != 2 || s.Answers != 2 || s.Datagrams != 6 || s.Addrs[netip.MustParseAddr("198.51.100.7")] != 2 {
		t.Errorf("summary %+v", s)
	}
}

// waitReceived waits (bounded) until d has received n datagrams: the
// copies after the first arrive on the kept-open socket behind the answer.
func waitReceived(t *testing.T, d *Device, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); len(d.Received()) < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("received %d datagrams, want %d", len(d.Received()), n)
		}
	}
}
