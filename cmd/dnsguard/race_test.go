//go:build race

package main

// raceBuild: the tests run under the race detector, so the dnsguard binary
// the end-to-end tests start is built with it too.
const raceBuild = true
