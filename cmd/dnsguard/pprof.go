//go:build pprof

package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
)

// Profiles are built only with -tags pprof (scripts/bench.sh): the
// router's binary stays without runtime/pprof and its dependencies.
const profilesBuilt = true

// serveProfiles serves net/http/pprof on addr until the returned stop.
func serveProfiles(addr string) (func(), error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	return func() { srv.Close() }, nil
}
