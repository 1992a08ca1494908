package main

import (
	"context"
	"errors"
	"io"
)

// cmdDevices is being built (see the open issue); it fails loudly until then.
func cmdDevices(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("devices: not built yet")
}
