// Package testtopo builds a small multi-node network out of real Linux
// network namespaces and veth pairs, for ztunnel's privileged integration
// tests and the L4 benchmark (bench/l4). It needs root (CAP_NET_ADMIN,
// CAP_SYS_ADMIN), iproute2 (`ip`) and util-linux (`nsenter`).
//
// The root network namespace is never touched: no link, address, route,
// rule or sysctl is created or changed there. The topology is
//
//	fabric netns:  bridge br0
//	   │  veth nN (fabric) ── eth0 (node N)
//	node N netns:  eth0 10.10.0.N/24 [fd00:a::N/64], ip_forward=1,
//	               10.10.M.0/24 via 10.10.0.M for every other node M
//	   │  veth pK (node, 169.254.1.1/32 [fe80::1]) ── eth0 (pod)
//	pod netns:     eth0 10.10.N.(K+1)/32 [fd00:a:N::(K+1)/128], lo up,
//	               default via 169.254.1.1 [fe80::1] dev eth0
//
// so the first pod of node 1 is 10.10.1.2, and a connection from a pod on
// node 1 to a pod on node 2 crosses pod → node1 → fabric bridge → node2 →
// pod with no NAT: the server sees the client pod's address.
//
// Network namespaces are named ambit-tt-<pid>-<seq>-{fabric,nodeN,nodeN-podK}
// (files under /run/netns). [New] first deletes namespaces of earlier runs
// whose process no longer exists (after killing processes left inside
// them), so a test binary killed before its cleanup ran leaves nothing
// behind for long.
//
// Besides the network, a Topology runs commands inside a namespace
// ([Topology.Start], [Topology.Exec]; output captured, process group killed
// at Close), runs Go code inside one ([Topology.Do], [Topology.Listen],
// [Topology.Dial]) and installs ztunnel's real in-pod redirection rules
// ([Topology.InstallRedirect], from ambit.dev/pkg/redirect).
//
// Typical test use:
//
//	topo := testtopo.Setup(t, testtopo.Options{Nodes: 2, PodsPerNode: 1})
//	client, server := topo.Nodes[0].Pods[0], topo.Nodes[1].Pods[0]
//	ln, err := topo.Listen(server.NetnsPath, "tcp", ":8080")
//	...
//	c, err := topo.Dial(ctx, client.NetnsPath, "tcp", netip.AddrPortFrom(server.IP, 8080).String())
package testtopo
