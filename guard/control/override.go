package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/dnsguard/dnsguard/guard/device"
)

// setOverride reads a device's policy override from body ({"class":
// NAME, "strict": bool, "exempt": bool}; {} clears it) and sets it on
// device id: what the API's POST /api/v1/devices/{id} and the control
// socket's PUT /devices/{id}/override share. On failure it returns the
// HTTP status to answer with: 400 for a body that is not an override or
// names no configured class, 404 for a device never seen.
func setOverride(reg *device.Registry, id string, body io.Reader) (device.Decision, int, error) {
	var o device.Override
	dec := json.NewDecoder(io.LimitReader(body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		return device.Decision{}, 400, fmt.Errorf("want {\"class\": NAME, \"strict\": true|false, \"exempt\": true|false}: %w", err)
	}
	if o.Class != "" {
		if names := reg.ClassNames(); !slices.Contains(names, o.Class) {
			return device.Decision{}, 400, fmt.Errorf("no class %q in the config (classes: %s)", o.Class, strings.Join(names, ", "))
		}
	}
	d, err := reg.SetOverride(id, &o)
	switch {
	case errors.Is(err, device.ErrUnknownDevice):
		return d, 404, errors.New("no such device")
	case err != nil:
		return d, 500, err
	}
	return d, 200, nil
}
