// Package benchkit is what Ambit's data-path benchmarks share: the
// network-namespace topology (ztunnel/internal/testtopo, re-exported so a
// benchmark in another module can build one), running real ztunnels in it
// from a workloads file, local-CA certificates for the reference proxies,
// an open-loop fixed-rate request schedule, and process accounting from
// /proc (CPU time, RSS) with percentiles and machine facts for the report.
//
// Users: ztunnel/bench/l4 (L4 data path) and waypoint/bench/l7 (waypoint).
// Nothing here is used by a shipped binary.
package benchkit
