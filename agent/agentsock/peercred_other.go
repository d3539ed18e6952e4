//go:build !linux

package agentsock

import "net"

// peerUID cannot tell the peer's user on this platform: the socket's
// path checks alone stand.
func peerUID(net.Conn) (uid uint32, known bool, err error) { return 0, false, nil }
