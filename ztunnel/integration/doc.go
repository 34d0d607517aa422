// Package integration holds ztunnel's privileged end-to-end tests: real
// ztunnel processes (built with go build) run inside the node network
// namespaces of an internal/testtopo topology, with the real in-pod
// redirection rules of ambit.dev/pkg/redirect, and test applications
// listen and dial inside pod namespaces. The tests need root and are
// named TestPrivileged...; they fail (not skip) without it.
//
//	go test -count=1 -p 1 -run TestPrivileged ./integration/
package integration
