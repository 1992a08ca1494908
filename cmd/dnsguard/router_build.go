//go:build router

package main

import (
	"context"
	"errors"
	"io"
)

// The router build (-tags router, used by the OpenWrt package) leaves out
// the commands that belong on a PC: the adversarial lab and the pcap
// audit. They cost about 1.3 MiB of a mipsel binary, a tenth of the
// router's flash budget for the package.
var errNotInRouterBuild = errors.New("this command is not in the router build: use the full build (go install github.com/dnsguard/dnsguard/cmd/dnsguard@latest) on a PC")

func cmdLab(context.Context, []string, io.Writer, io.Writer) error   { return errNotInRouterBuild }
func cmdAudit(context.Context, []string, io.Writer, io.Writer) error { return errNotInRouterBuild }
