// Package e2e holds roomlb's end-to-end tests: routers, sidecars and
// monoliths of internal/cluster over a real redis-server, driven by
// WebSocket and HTTP clients on loopback, as browsers would.
package e2e
