// Package socket creates the sockets ztunnel needs inside pod network
// namespaces: listeners (15001, 15006, 15008) bound in a pod's netns with
// SO_REUSEPORT, SO_MARK and optionally IP_TRANSPARENT; dialers whose
// sockets live in a pod's netns, carry ztunnel's mark and may use the
// original client address as source; and SO_ORIGINAL_DST lookup for
// connections the pod's REDIRECT rules captured.
//
// A socket belongs to the network namespace it was created in for its whole
// life, so only creation switches the calling OS thread into the pod's
// namespace (and straight back); reading, writing and accepting happen on
// any goroutine.
package socket
