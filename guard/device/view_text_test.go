package device_test

import (
	"strings"
	"testing"

	"github.com/dnsguard/dnsguard/guard/device"
)

func TestWriteTableCountsUnconfirmed(t *testing.T) {
	views := []device.View{
		{ID: "02:00:00:00:00:01", MAC: "02:00:00:00:00:01", Name: "kettle"},
		{ID: "06:11:22:33:44:55", MAC: "06:11:22:33:44:55", Unconfirmed: true},
		{ID: "0a:11:22:33:44:55", MAC: "0a:11:22:33:44:55", Unconfirmed: true},
	}
	var b strings.Builder
	if err := device.WriteTable(&b, views); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, "kettle") || strings.Contains(out, "06:11:22:33:44:55") || !strings.Contains(out, "2 unconfirmed source MACs") {
		t.Errorf("table:\n%s", out)
	}
}
