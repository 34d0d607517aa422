package model

// Thresholds are the circuit_breakers thresholds of priority DEFAULT that
// limit what is in flight to one cluster, summed over all its endpoints
// and connection pools (Envoy's per-cluster resource manager).
type Thresholds struct {
	// MaxConnections bounds the upstream connections (HBONE streams to
	// endpoints) open at once.
	MaxConnections int64
	// MaxPendingRequests bounds the requests waiting for a connection or
	// stream.
	MaxPendingRequests int64
	// MaxRequests bounds the requests in flight on upstream connections.
	MaxRequests int64
}

// DefaultThreshold is Envoy's default of each threshold.
const DefaultThreshold = 1024

// DefaultThresholds are Envoy's defaults.
var DefaultThresholds = Thresholds{MaxConnections: DefaultThreshold, MaxPendingRequests: DefaultThreshold, MaxRequests: DefaultThreshold}

// Limit names one threshold (the limit label of
// ambit_waypoint_upstream_overflow_total).
type Limit string

// The limits.
const (
	LimitConnections Limit = "max_connections"
	LimitPending     Limit = "max_pending_requests"
	LimitRequests    Limit = "max_requests"
)

// Of returns the value of the threshold l.
func (t Thresholds) Of(l Limit) int64 {
	switch l {
	case LimitConnections:
		return t.MaxConnections
	case LimitPending:
		return t.MaxPendingRequests
	}
	return t.MaxRequests
}

// Limit returns the cluster's threshold l (Envoy's default without
// circuit breakers).
func (c *Cluster) Limit(l Limit) int64 {
	if c.Limits == nil {
		return DefaultThresholds.Of(l)
	}
	return c.Limits.Of(l)
}
