//go:build !pprof

package main

import "errors"

const profilesBuilt = false

func serveProfiles(string) (func(), error) {
	return nil, errors.New("this build has no profiles: build with -tags pprof")
}
